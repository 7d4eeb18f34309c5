#!/usr/bin/env python3
"""Golden outputs for Marian's text path (MarianTokenizer: sentencepiece source.spm / target.spm + vocab.json,
no tokenizer.json), built with transformers 5.17 and sentencepiece.

Usage:
  /work/tfenv/bin/python tools/make_golden_marian_tok.py crates/lmgen/tests/fixtures/golden-seq2seq/marian-text

OUT receives:
- marian_text/: a tiny random MarianMTModel checkpoint (shared vocabulary; the source .spm with nmt_nfkc, the
  normalization Helsinki-NLP/opus-mt-* use, the target .spm with a few rules of its own) saved with MarianTokenizer.save_pretrained;
- marian_sep/: tokenizer files only, `separate_vocabs` (vocab.json + target_vocab.json), a source .spm with the
  identity normalization (no precompiled charsmap) that keeps extra whitespace, and a target .spm with
  a few rules of its own and no dummy prefix;
- cases.json: MarianTokenizer.from_pretrained(folder)'s ids for each string (input mode, `</s>` appended),
  decode() with and without skip_special_tokens (of those ids, of seeded random ids, of hand-written ids), and
  greedy generate() from text prompts on marian_text (ids and batch_decode(skip_special_tokens=True)).
Everything is seeded and single-threaded; a re-run writes identical bytes.
"""
import argparse
import io
import json
import math
import os
import random
import shutil
import sys
import warnings

import sentencepiece as spm
import torch
import transformers
from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden_seq2seq import CORPUS, randomize, write_json  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore")

# More text for the tokenizers (written for this file), German-heavy for the target side.
EXTRA = """Der Zug nach Hamburg fährt um sieben Uhr vom Bahnsteig zwei ab.
Die Kinder spielen im Park, während die Vögel in den Bäumen singen.
Meine Großmutter erzählte Geschichten über den Winter des großen Sturms.
Das Museum ist von zehn Uhr morgens bis sechs Uhr abends geöffnet.
Wissenschaftler beobachteten letzte Woche einen hellen Kometen nahe der Sonne.
Kaffee und Tee sind in vielen Ländern die beliebtesten Getränke.
Der Lehrer bat die Schüler, das erste Kapitel zu Hause zu lesen.
Eine neue Brücke wird nächstes Jahr die beiden Seiten des Tals verbinden.
Bitte schicken Sie mir die Ergebnisse vor der Besprechung am Freitag.
Straße, Größe, Übermut, Äpfel, Öl und süße Brötchen.
The café serves crème brûlée and a naïve résumé of the menu.
Prices rose by 12.5% in 2023, from 1,000 to 1,125 euros.
"""

STRINGS = [
    "",
    " ",
    "   ",
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "Das Haus ist wunderbar und der Garten ist grün.",
    "  leading and trailing spaces  ",
    "multiple   internal    spaces",
    "tab\there and new\nline",
    "Straße Größe Übermut",
    "café naïve résumé",
    "cafe\u0301 decomposed",
    "ＦＵＬＬ ｗｉｄｔｈ １２３",
    "ﬁne ﬂow ligatures",
    "① ② ③ x² H₂O",
    "ellipsis… and em—dash",
    "no\u00a0break and zero\u200bwidth",
    "1234567890",
    "Prices rose by 12.5% in 2023.",
    ">>de<< Hello world",
    ">>fr<<Bonjour le monde",
    ">>xx<< an unknown code",
    "Hello >>de<< inside",
    ">>de<<",
    ">>de",
    "I ❤ Rust 🦀",
    "你好世界",
    "mixed 你好 text",
    "</s>",
    "hello </s> world",
    "<unk> and <pad>",
    "<s> is not special",
    "▁ the meta symbol",
    "a▁b",
    "bell\x07char",
    "e\u0301\u0301 stacked accents",
    "한국어 텍스트",
    "Ǆ ǅ ǆ titlecase",
    "QUICK Brown FOX",
    "end with punctuation!?",
    "a",
]

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Das Haus ist wunderbar.",
    ">>de<< A small boat drifted across the lake.",
    "café naïve 你好",
    "Coffee and tea are popular.",
]


# A few normalization rules (code points in hex, tab, replacement) for the target .spm files: a small
# precompiled charsmap (nmt_nfkc's is ~240 KB; the source .spm of marian_text has it).
RULES_TSV = """FB01\t66 69
FB02\t66 6C
2460\t31
00A0\t20
2026\t2E 2E 2E
FF21\t41
"""


def rules_tsv(folder):
    path = os.path.join(folder, "_rules.tsv")
    with open(path, "w") as f:
        f.write(RULES_TSV)
    return path


def corpus_lines():
    return [l for l in (CORPUS + EXTRA).splitlines() if l.strip()]


def train_spm(lines, vocab_size, **kw):
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size,
                                   model_type="unigram", num_threads=1, hard_vocab_limit=False,
                                   character_coverage=0.985, minloglevel=2, **kw)
    return out.getvalue()


def pieces(model_bytes):
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())
            if not (sp.is_control(i) or sp.is_unknown(i))]


def make_vocab(piece_lists, rng, drop, codes):
    """Marian's layout: </s> 0, <unk> 1, the rest in an order unrelated to the .spm ids, <pad> last. `drop`
    pieces of the spm are left out (they encode to <unk>)."""
    seen = []
    for ps in piece_lists:
        for p in ps:
            if p not in seen:
                seen.append(p)
    rng.shuffle(seen)
    kept = [p for p in seen if p not in drop]
    tokens = ["</s>", "<unk>"] + codes + kept + ["<pad>"]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(folder, src, tgt, vocab, target_vocab=None):
    os.makedirs(folder, exist_ok=True)
    work = os.path.join(folder, "_work")
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "source.spm"), "wb") as f:
        f.write(src)
    with open(os.path.join(work, "target.spm"), "wb") as f:
        f.write(tgt)
    with open(os.path.join(work, "vocab.json"), "w") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=2)
    kw = {}
    if target_vocab is not None:
        with open(os.path.join(work, "target_vocab.json"), "w") as f:
            json.dump(target_vocab, f, ensure_ascii=False, indent=2)
        kw = dict(target_vocab_file=os.path.join(work, "target_vocab.json"), separate_vocabs=True)
    tok = MarianTokenizer(os.path.join(work, "source.spm"), os.path.join(work, "target.spm"),
                          os.path.join(work, "vocab.json"), **kw)
    tok.save_pretrained(folder)
    shutil.rmtree(work)
    return MarianTokenizer.from_pretrained(folder)


def decode_cases(tok, id_lists):
    out = []
    for ids in id_lists:
        case = {"ids": ids}
        for skip in (False, True):
            key = "skip" if skip else "keep"
            try:
                case[key] = tok.decode(ids, skip_special_tokens=skip)
            except (IndexError, KeyError) as e:
                case[key] = None
                case["error"] = type(e).__name__
        out.append(case)
    return out


def tokenizer_cases(tok, decode_size, spm_size, rng):
    encode = [{"text": s, "ids": tok(s).input_ids} for s in STRINGS]
    specials = [tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens]
    random_ids = []
    for _ in range(30):
        n = rng.randint(1, 14)
        random_ids.append([rng.choice(specials) if rng.random() < 0.15 else rng.randrange(decode_size)
                           for _ in range(n)])
    crafted = [
        [],
        specials,
        [specials[0], specials[0]],
        # the last ids, and one past the decoding vocabulary and the .spm (IndexError)
        [decode_size - 1, min(decode_size, spm_size - 1)],
        [decode_size + spm_size + 5],
    ]
    return {
        "encode": encode,
        "decode": decode_cases(tok, [c["ids"] for c in encode] + random_ids + crafted),
        "all_special_tokens": tok.all_special_tokens,
    }


def build_model(vocab):
    pad = vocab["<pad>"]
    n = len(vocab)
    cfg = MarianConfig(vocab_size=n, decoder_vocab_size=n, d_model=16, encoder_layers=2, decoder_layers=2,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
                       max_position_embeddings=64, dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
                       activation_function="swish", scale_embedding=True, pad_token_id=pad, eos_token_id=0,
                       bos_token_id=None, decoder_start_token_id=pad, forced_eos_token_id=0,
                       share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    torch.manual_seed(8)
    model = MarianMTModel(cfg)

    def flb(m, g):
        m.final_logits_bias.copy_(0.3 * torch.randn(m.final_logits_bias.shape, generator=g))

    randomize(model, 808, emb_std=1.0, gain=1.0, extra=flb)
    model.eval()
    gen = {"bad_words_ids": [[pad]], "bos_token_id": 0, "decoder_start_token_id": pad, "eos_token_id": 0,
           "forced_eos_token_id": 0, "max_length": 24, "num_beams": 1, "pad_token_id": pad}
    model.generation_config = GenerationConfig(**gen)
    return model, gen


def generate_cases(model, tok):
    cases = []
    for prompt in PROMPTS:
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, output_scores=True, return_dict_in_generate=True)
        margin = math.inf
        for step in out.scores:
            top = torch.topk(step[0].float(), 2).values
            if torch.isfinite(top).all():
                margin = min(margin, (top[0] - top[1]).item())
        assert margin > 1e-3, f"greedy margin {margin} too small for {prompt!r}"
        seq = out.sequences[0].tolist()
        cases.append({"prompt": prompt, "input_ids": enc.input_ids[0].tolist(), "sequence": seq,
                      "text": tok.decode(seq, skip_special_tokens=True),
                      "min_margin": round(margin, 4)})
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = corpus_lines()
    german = [l for l in lines if any(c in l for c in "äöüßÄÖÜ") or l.startswith(("Der ", "Die ", "Das ", "Wir "))]

    # Shared vocabulary; nmt_nfkc on the source side (opus-mt-en-de style).
    src = train_spm(lines, 300)
    rules = rules_tsv(args.out)
    tgt = train_spm(german + lines[:10], 220, normalization_rule_tsv=rules)
    rng = random.Random(20)
    src_pieces = pieces(src)
    drop = set(random.Random(21).sample([p for p in src_pieces if len(p) > 2], 6))
    vocab = make_vocab([src_pieces, pieces(tgt)], rng, drop, [">>de<<", ">>fr<<", ">>en<<"])
    folder = os.path.join(args.out, "marian_text")
    tok = write_tokenizer(folder, src, tgt, vocab)
    spm_size = spm.SentencePieceProcessor(model_proto=src).get_piece_size()
    cases = {"marian_text": tokenizer_cases(tok, len(vocab), spm_size, random.Random(22))}
    cases["marian_text"]["dropped_pieces"] = sorted(drop)
    model, gen = build_model(vocab)
    model.save_pretrained(folder)
    write_json(os.path.join(folder, "generation_config.json"), dict(gen, transformers_version=transformers.__version__))
    model = MarianMTModel.from_pretrained(folder)
    model.eval()
    generate = generate_cases(model, MarianTokenizer.from_pretrained(folder))

    # Separate vocabularies; identity normalization keeping extra whitespace; no dummy prefix on the target.
    src2 = train_spm(lines, 260, normalization_rule_name="identity", remove_extra_whitespaces=False)
    tgt2 = train_spm(german + lines[:10], 200, normalization_rule_tsv=rules, add_dummy_prefix=False)
    os.remove(rules)
    vocab2 = make_vocab([pieces(src2)], random.Random(23), set(), [">>de<<"])
    target_vocab2 = make_vocab([pieces(tgt2)], random.Random(24), set(), [])
    folder2 = os.path.join(args.out, "marian_sep")
    tok2 = write_tokenizer(folder2, src2, tgt2, vocab2, target_vocab2)
    spm_size2 = spm.SentencePieceProcessor(model_proto=tgt2).get_piece_size()
    cases["marian_sep"] = tokenizer_cases(tok2, len(target_vocab2), spm_size2, random.Random(25))

    write_json(os.path.join(args.out, "cases.json"),
               {"transformers": transformers.__version__, "sentencepiece": spm.__version__,
                "tokenizers": cases, "generate": generate}, sort=False)


if __name__ == "__main__":
    main()
