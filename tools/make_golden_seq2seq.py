#!/usr/bin/env python3
"""Golden outputs for encoder-decoder generate(): tiny random T5, Flan-T5, mT5, BART, mBART, Marian and Whisper
checkpoints built with transformers 5.17, and what transformers (float32, CPU) returns on them.

Usage:
  /work/tfenv/bin/python tools/make_golden_seq2seq.py crates/lmgen/tests/fixtures/golden-seq2seq [--only t5,bart]

OUT receives models/<name>/ (config.json, generation_config.json, model.safetensors, tokenizer files),
generate.json, forward.safetensors, scores.safetensors and inputs.safetensors. With --only, the other models'
entries in the existing files are kept. Everything is seeded; a re-run writes identical bytes.
See OUT/README.md for the formats and the transformers semantics the cases pin down.
"""
import os

# The tokenizers trainers are multi-threaded; one thread keeps their output reproducible.
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from tokenizers import AddedToken  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MarianConfig,
    MarianMTModel,
    MBartConfig,
    MBartForConditionalGeneration,
    MT5Config,
    MT5ForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
    WhisperConfig,
    WhisperForConditionalGeneration,
)
from transformers.generation.utils import GenerationMixin  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore")

MODELS = ["t5", "flan_t5", "mt5", "bart", "mbart", "marian", "whisper"]

# A small corpus for the tokenizers (written for this file).
CORPUS = """The quick brown fox jumps over the lazy dog near the river bank.
A small boat drifted slowly across the quiet lake in the early morning.
The weather today is cold and windy, with rain expected in the evening.
She opened the old book and found a letter hidden between the pages.
Translate English to German: the house is wonderful and the garden is green.
summarize: studies have shown that owning a dog is good for your health.
The train to the city leaves at seven o'clock every morning from platform two.
Birds were singing in the trees while the children played in the park.
He wrote a long report about the history of the mountain villages.
The market sells fresh bread, cheese, apples and honey on Saturdays.
Please send me the results of the experiment before the meeting on Friday.
The committee decided to postpone the decision until next month.
Water boils at one hundred degrees at sea level and freezes at zero.
My grandmother used to tell stories about the winter of the great storm.
The museum is open from ten in the morning until six in the evening.
A new bridge will connect the two sides of the valley next year.
The teacher asked the students to read the first chapter at home.
Coffee and tea are the most popular drinks in many countries.
The engine made a strange noise, so we stopped the car by the road.
Scientists observed a bright comet passing close to the sun last week.
Das Haus ist wunderbar und der Garten ist grün.
Die Katze schläft auf dem Sofa neben dem Fenster.
Wir fahren morgen mit dem Zug nach Berlin.
Casa este frumoasă și grădina este verde.
Pisica doarme pe canapea lângă fereastră.
Mâine mergem cu trenul la București.
La maison est belle et le jardin est vert.
Le chat dort sur le canapé près de la fenêtre.
numbers: 1 2 3 4 5 6 7 8 9 10 11 12 2024 1999 3.14 100%
question: where does the river flow? context: the river flows to the sea.
"""

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "translate English to German: The house is wonderful.",
    "summarize: the weather today is cold and windy.",
    "A small boat drifted across the lake.",
    "question: where does the river flow?",
    "She opened the old book.",
    "The train to the city leaves at seven.",
    "Birds were singing in the trees while the children played.",
    "Coffee and tea are popular.",
    "numbers: 1 2 3 4 5",
    "The museum is open from ten in the morning until six in the evening.",
    "Scientists observed a bright comet.",
]


def corpus_lines():
    return [l for l in CORPUS.splitlines() if l.strip()]


# ----------------------------------------------------------------------------------------------- tokenizers

def train_unigram_t5(vocab_size=250, extra_ids=4):
    """A T5-style Unigram tokenizer: <pad>=0, </s>=1, <unk>=2, Metaspace, '$A </s>', <extra_id_N> at the end
    (in reverse order, <extra_id_0> last, as in t5-small)."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", shrinking_factor=0.75, max_piece_length=8, n_sub_iterations=2)
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    # The trainer's scores vary in the last bits from run to run (hash-map order), and pieces of equal score
    # come in any order (the single characters it adds get min_score - 1e-4 * i in hash order): rebuild the
    # model with scores rounded to 2 decimals and the pieces sorted by
    # (score descending, piece), the three specials first.
    trained = [(p, round(sc, 2)) for p, sc in json.loads(tok.to_str())["model"]["vocab"]]
    pieces = trained[:3] + sorted(trained[3:], key=lambda ps: (-ps[1], ps[0]))
    pre, dec = tok.pre_tokenizer, tok.decoder
    tok = Tokenizer(models.Unigram([tuple(ps) for ps in pieces], unk_id=2, byte_fallback=False))
    tok.pre_tokenizer, tok.decoder = pre, dec
    tok.add_special_tokens([AddedToken(f"<extra_id_{i}>", normalized=False, special=True)
                            for i in reversed(range(extra_ids))])
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    return tok


def train_bytelevel_bpe(vocab_size, specials):
    """A byte-level BPE (GPT-2/RoBERTa style) trained on CORPUS; `specials` take the first ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    return tok


def make_bart_tokenizer():
    """BART: <s>=0 <pad>=1 </s>=2 <unk>=3, byte-level BPE, <mask> last; '<s> $A </s>' (RobertaProcessing)."""
    tok = train_bytelevel_bpe(400, ["<s>", "<pad>", "</s>", "<unk>"])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    return tok


MBART_LANGS = ["ar_AR", "de_DE", "en_XX", "fr_XX", "ro_RO"]


def make_mbart_tokenizer():
    """mBART: the BART byte-level vocabulary, then language codes and <mask> (as mbart-large-cc25 appends its
    language codes after the sentencepiece vocabulary); the source side is '$A </s> en_XX'."""
    tok = train_bytelevel_bpe(400, ["<s>", "<pad>", "</s>", "<unk>"])
    tok.add_special_tokens([AddedToken(l, normalized=False, special=True) for l in MBART_LANGS])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True)])
    en = tok.token_to_id("en_XX")
    tok.post_processor = processors.TemplateProcessing(single="$A </s> en_XX", pair="$A $B </s> en_XX",
                                                       special_tokens=[("</s>", 2), ("en_XX", en)])
    return tok


WHISPER_LANGS = ["en", "zh", "de", "es", "ru", "ko", "fr", "ja"]  # the first eight of Whisper's order


def make_whisper_tokenizer():
    """Whisper's layout: byte-level BPE text tokens, then <|endoftext|>, <|startoftranscript|>, the language
    tokens, <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|>,
    then the 1501 timestamps <|0.00|> .. <|30.00|> (added, not special, as in openai/whisper-*)."""
    tok = train_bytelevel_bpe(300, [])
    n_text = tok.get_vocab_size()
    specials = ["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{l}|>" for l in WHISPER_LANGS] + [
        "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    tok.add_tokens([AddedToken("<|%.2f|>" % (i * 0.02), normalized=False, special=False) for i in range(1501)])
    assert tok.token_to_id("<|endoftext|>") == n_text
    assert tok.token_to_id("<|30.00|>") == tok.get_vocab_size() - 1
    sot = tok.token_to_id("<|startoftranscript|>")
    notimestamps = tok.token_to_id("<|notimestamps|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftranscript|> <|notimestamps|> $A <|endoftext|>",
        pair="<|startoftranscript|> <|notimestamps|> $A $B <|endoftext|>",
        special_tokens=[("<|startoftranscript|>", sot), ("<|notimestamps|>", notimestamps),
                        ("<|endoftext|>", n_text)])
    return tok


def save_tokenizer(tok, folder, config):
    tok.save(os.path.join(folder, "tokenizer.json"), pretty=False)
    write_json(os.path.join(folder, "tokenizer_config.json"), config)


def tokenizers_for_all():
    """Built once: t5/flan_t5/mt5 share the Unigram tokenizer."""
    t5 = train_unigram_t5()
    t5_cfg = {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
              "extra_ids": 4, "additional_special_tokens": [f"<extra_id_{i}>" for i in range(4)],
              "model_max_length": 512}
    bart_cfg = {"tokenizer_class": "BartTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
                "add_prefix_space": False, "model_max_length": 64}
    # MBartTokenizer rebuilds its backend from a sentencepiece model and fails on a byte-level tokenizer.json:
    # the file is loaded as it is.
    mbart_cfg = dict(bart_cfg, tokenizer_class="PreTrainedTokenizerFast")
    mbart_cfg.pop("add_prefix_space")
    whisper_cfg = {"tokenizer_class": "WhisperTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                   "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 64}
    return {"t5": (t5, t5_cfg), "flan_t5": (t5, t5_cfg), "mt5": (t5, t5_cfg),
            "bart": (make_bart_tokenizer(), bart_cfg), "mbart": (make_mbart_tokenizer(), mbart_cfg),
            "whisper": (make_whisper_tokenizer(), whisper_cfg)}


# ----------------------------------------------------------------------------------------------- helpers

def _fmt(obj, indent=0, sort=True):
    """JSON with objects one key a line, and lists of numbers (nested too) kept on one line."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        keys = sorted(obj) if sort else list(obj)
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_fmt(obj[k], indent + 1, sort)}" for k in keys]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list) and any(isinstance(x, dict) for x in obj):
        return "[\n" + ",\n".join(pad + _fmt(x, indent + 1, sort) for x in obj) + "\n" + "  " * indent + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def write_json(path, obj, sort=True):
    with open(path, "w") as f:
        f.write(_fmt(obj, sort=sort) + "\n")


def tolist(t):
    return t.detach().cpu().tolist()


def randomize(model, seed, emb_std=1.0, gain=1.0, bias_std=0.1, qk_gain=1.0, extra=None):
    """Seeded weights with a wide spread, so that greedy choices are clear (transformers' own init is
    near-uniform on models this small); `qk_gain` sharpens attention. Frozen parameters (sinusoidal
    positions) keep their values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if not p.requires_grad:
                continue
            if p.ndim == 1:
                if "norm" in name and name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(bias_std * torch.randn(p.shape, generator=g))
            elif "embed" in name or "shared" in name or "relative_attention_bias" in name:
                p.copy_(emb_std * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                qk = name.endswith(("q_proj.weight", "k_proj.weight", ".q.weight", ".k.weight"))
                p.copy_((gain * (qk_gain if qk else 1.0)) / math.sqrt(fan_in) * torch.randn(p.shape, generator=g))
        if extra is not None:
            extra(model, g)


class MarginRecorder(LogitsProcessor):
    """Appended last to the processors: sees the scores the greedy argmax runs on. Records the smallest gap
    between the best and second-best finite score over the rows still running (no EOS after position 0)."""

    def __init__(self, eos_ids):
        self.eos = set(eos_ids)
        self.min = math.inf

    def __call__(self, input_ids, scores):
        for r in range(scores.shape[0]):
            if any(t in self.eos for t in input_ids[r, 1:].tolist()):
                continue
            s = scores[r]
            finite = s[torch.isfinite(s)]
            if finite.numel() < 2:
                continue  # a forced token
            top2 = torch.topk(finite, 2).values
            self.min = min(self.min, (top2[0] - top2[1]).item())
        return scores


class Capture:
    """Records, for each inner generate() call, the generation config after transformers prepared it (max_length
    etc.) and the logits processors it built, in order."""

    def __init__(self):
        self.calls = []
        self.orig = GenerationMixin._get_logits_processor

    def __enter__(self):
        cap = self

        def wrapped(model, generation_config, *a, **kw):
            procs = cap.orig(model, generation_config, *a, **kw)
            gc = generation_config
            cap.calls.append({
                "max_length": gc.max_length, "min_length": gc.min_length,
                "decoder_start_token_id": _plain(gc.decoder_start_token_id), "eos_token_id": _plain(gc.eos_token_id),
                "pad_token_id": _plain(gc.pad_token_id), "bos_token_id": _plain(gc.bos_token_id),
                "forced_bos_token_id": gc.forced_bos_token_id, "forced_eos_token_id": _plain(gc.forced_eos_token_id),
                "num_beams": gc.num_beams,
                "processors": [type(p).__name__ for p in procs if not isinstance(p, MarginRecorder)],
            })
            return procs

        GenerationMixin._get_logits_processor = wrapped
        return self

    def __exit__(self, *exc):
        GenerationMixin._get_logits_processor = self.orig


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def pad_right(rows, pad_id):
    n = max(len(r) for r in rows)
    ids = [r + [pad_id] * (n - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (n - len(r)) for r in rows]
    return ids, mask


# ----------------------------------------------------------------------------------------------- checkpoints

def _untie_lm_head(model, g, std):
    """T5Config/MT5Config force tie_word_embeddings=True in transformers 5; an untied head (Flan-T5, mT5) is a
    separate lm_head.weight in the checkpoint, which from_pretrained keeps when it differs from shared.weight."""
    model.lm_head.weight = torch.nn.Parameter(std * torch.randn(model.lm_head.weight.shape, generator=g))
    model.all_tied_weights_keys.pop("lm_head.weight", None)


def _random_final_logits_bias(std):
    def extra(model, g):
        model.final_logits_bias.copy_(std * torch.randn(model.final_logits_bias.shape, generator=g))
    return extra


# Weight scales per checkpoint (embedding std, gain of the linear layers), chosen so that greedy outputs vary
# and the top-2 margins are healthy.
PARAMS = {
    "t5": dict(emb_std=1.0, gain=1.5),
    "flan_t5": dict(emb_std=1.0, gain=1.0),
    "mt5": dict(emb_std=1.0, gain=1.5),
    "bart": dict(emb_std=1.0, gain=1.5),
    "mbart": dict(emb_std=1.0, gain=1.5),
    "marian": dict(emb_std=1.0, gain=1.0, flb=0.3),
    "whisper": dict(emb_std=1.0, gain=2.0, qk_gain=3.0),
}


def rand_params(name):
    return {k: v for k, v in PARAMS[name].items() if k != "flb"}


def build(name, vocab):
    """Returns (model, config.json edits, generation_config.json dict, ids) for one checkpoint."""
    common_bart = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=40, decoder_ffn_dim=32, max_position_embeddings=64,
                       dropout=0.1, attention_dropout=0.0, activation_dropout=0.0)
    if name == "t5":
        # T5 v1.0 (t5-small): ReLU FFN, tied head scaled by d_model**-0.5; d_kv * num_heads (48) != d_model (32);
        # max_distance 20 (< the lengths here) so the logarithmic buckets and the clamp are both reached.
        cfg = T5Config(vocab_size=256, d_model=32, d_kv=12, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=4,
                       relative_attention_num_buckets=32, relative_attention_max_distance=20,
                       feed_forward_proj="relu", tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0)
        torch.manual_seed(1)
        model = T5ForConditionalGeneration(cfg)
        randomize(model, 101, **rand_params(name))
        edits = {"tie_word_embeddings": True}
        gen = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
        ids = dict(start=0, eos=1, pad=0)
    elif name in ("flan_t5", "mt5"):
        if name == "flan_t5":
            # Flan-T5 / T5 v1.1: gated-GELU (gelu_new, wi_0 * wi_1), untied unscaled head, 3 encoder and 2
            # decoder layers, 16 buckets, max_distance 32, d_kv * num_heads (40) != d_model (32). (More decoder
            # than encoder layers crashes transformers 5.17's cached generate(): see README.)
            cfg = T5Config(vocab_size=256, d_model=32, d_kv=20, d_ff=32, num_layers=3, num_decoder_layers=2,
                           num_heads=2, relative_attention_num_buckets=16, relative_attention_max_distance=32,
                           feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
                           eos_token_id=1, decoder_start_token_id=0)
            torch.manual_seed(2)
            model = T5ForConditionalGeneration(cfg)
            seed = 202
        else:
            cfg = MT5Config(vocab_size=256, d_model=32, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
                            num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                            feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
                            eos_token_id=1, decoder_start_token_id=0)
            torch.manual_seed(3)
            model = MT5ForConditionalGeneration(cfg)
            seed = 303
        randomize(model, seed, **rand_params(name), extra=lambda m, g: _untie_lm_head(m, g, 0.3))
        edits = {"tie_word_embeddings": False}
        gen = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
        ids = dict(start=0, eos=1, pad=0)
    elif name == "bart":
        # BART: learned positions with offset 2, layernorm_embedding, post-norm, no embedding scale, tied head
        # plus final_logits_bias, GELU; 4 encoder and 2 decoder heads, different FFN widths.
        kw = dict(common_bart, decoder_attention_heads=2, decoder_ffn_dim=24)
        cfg = BartConfig(vocab_size=vocab, activation_function="gelu", scale_embedding=False, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
                         tie_word_embeddings=True, **kw)
        torch.manual_seed(4)
        model = BartForConditionalGeneration(cfg)
        randomize(model, 404, **rand_params(name), extra=_random_final_logits_bias(PARAMS[name].get("flb", 1.0)))
        edits = {}
        gen = {"bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2, "forced_bos_token_id": 0,
               "forced_eos_token_id": 2, "pad_token_id": 1}
        ids = dict(start=2, eos=2, pad=1)
    elif name == "mbart":
        # mBART: pre-norm layers, a final layer_norm in encoder and decoder, layernorm_embedding,
        # embeddings scaled by sqrt(d_model), positions offset 2, final_logits_bias; decoding starts with a
        # language code (mbart-large-en-ro style).
        ro = vocab["ro_RO"]
        cfg = MBartConfig(vocab_size=vocab["size"], activation_function="gelu", scale_embedding=True,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=ro,
                          forced_eos_token_id=2, tie_word_embeddings=True, **common_bart)
        torch.manual_seed(5)
        model = MBartForConditionalGeneration(cfg)
        randomize(model, 505, **rand_params(name), extra=_random_final_logits_bias(PARAMS[name].get("flb", 1.0)))
        edits = {}
        gen = {"bos_token_id": 0, "decoder_start_token_id": ro, "eos_token_id": 2, "forced_eos_token_id": 2,
               "pad_token_id": 1}
        ids = dict(start=ro, eos=2, pad=1)
    elif name == "marian":
        # Marian (opus-mt): static sinusoidal positions (not in the checkpoint), embeddings scaled, no
        # layernorm_embedding, post-norm, SiLU ("swish"), final_logits_bias, eos 0, pad = decoder start = last id.
        cfg = MarianConfig(vocab_size=320, decoder_vocab_size=320, activation_function="swish", scale_embedding=True,
                           pad_token_id=319, eos_token_id=0, bos_token_id=None, decoder_start_token_id=319,
                           forced_eos_token_id=0, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
                           **common_bart)
        torch.manual_seed(6)
        model = MarianMTModel(cfg)
        randomize(model, 606, **rand_params(name), extra=_random_final_logits_bias(PARAMS[name].get("flb", 1.0)))
        edits = {}
        # As Helsinki-NLP/opus-mt-* ship it: beam search by default, the pad token banned, renormalized scores.
        gen = {"bad_words_ids": [[319]], "bos_token_id": 0, "decoder_start_token_id": 319, "eos_token_id": 0,
               "forced_eos_token_id": 0, "max_length": 64, "num_beams": 4, "pad_token_id": 319,
               "renormalize_logits": True}
        ids = dict(start=319, eos=0, pad=319)
    elif name == "whisper":
        w = vocab
        eot = w["<|endoftext|>"]
        cfg = WhisperConfig(vocab_size=w["size"], num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32,
                            decoder_ffn_dim=32, max_source_positions=20, max_target_positions=64,
                            activation_function="gelu", scale_embedding=False, pad_token_id=eot, bos_token_id=eot,
                            eos_token_id=eot, decoder_start_token_id=w["<|startoftranscript|>"],
                            suppress_tokens=None, begin_suppress_tokens=[220, eot], tie_word_embeddings=True)
        torch.manual_seed(7)
        model = WhisperForConditionalGeneration(cfg)
        # The (tied) head's timestamp rows rescaled: up for <|0.00|>..<|0.40|> (the span of a 40-frame input),
        # down for the later ones, so that timestamps come in pairs within the input and the seek loop of
        # Whisper's generate() runs more than once.
        ts = w["<|0.00|>"]

        def timestamps(m, g):
            m.proj_out.weight[ts:ts + 21].mul_(1.5)
            m.proj_out.weight[ts + 21:].mul_(0.4)
        randomize(model, 707, **rand_params(name), extra=timestamps)
        edits = {}
        specials = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"]
        gen = {
            "alignment_heads": [[1, 0], [1, 2]],
            "begin_suppress_tokens": [220, eot],
            "bos_token_id": eot,
            "decoder_start_token_id": w["<|startoftranscript|>"],
            "eos_token_id": eot,
            "forced_decoder_ids": None,
            "is_multilingual": True,
            "lang_to_id": {f"<|{l}|>": w[f"<|{l}|>"] for l in WHISPER_LANGS},
            "max_initial_timestamp_index": 50,
            "max_length": 64,
            "no_timestamps_token_id": w["<|notimestamps|>"],
            "pad_token_id": eot,
            "prev_sot_token_id": w["<|startofprev|>"],
            "return_timestamps": False,
            # whisper-tiny's list starts with these punctuation ids (same byte-level ids here) and ends with the
            # five task/control tokens, so suppress_tokens[-2] is <|startofprev|>.
            "suppress_tokens": [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93]
                               + [w[s] for s in specials],
            "task_to_id": {"transcribe": w["<|transcribe|>"], "translate": w["<|translate|>"]},
        }
        ids = dict(start=w["<|startoftranscript|>"], eos=eot, pad=eot)
    else:
        raise ValueError(name)
    model.eval()
    return model, edits, gen, ids


def calibrate_eos(model, gen, ids, samples, target=(4, 6)):
    """Raises the EOS logit until greedy decoding (20 new tokens) ends with EOS within 14 tokens on `target`
    of the sample inputs: random models rarely stop, and the cases need both stopping and running rows.
    With a final_logits_bias this is exact (bias[eos] is set between two prompts' closest approaches); without
    one, the EOS row of the head moves along the mean hidden state, tried step by step."""
    eos = ids["eos"]
    kw = {k: gen[k] for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id",
                              "forced_eos_token_id", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens")
          if k in gen}
    kw.update(num_beams=1, max_new_tokens=20, output_scores=True, return_dict_in_generate=True)

    def runs():
        res = []
        for inputs in samples:
            with torch.no_grad():
                out = model.generate(**inputs, **kw)
            start = inputs["decoder_input_ids"].shape[1] if "decoder_input_ids" in inputs else 1
            res.append((out.sequences[0, start:].tolist(), out.scores))
        return res

    def n_early(res):
        return sum(eos in new[:14] for new, _ in res)

    head = model.get_output_embeddings()
    if hasattr(model, "final_logits_bias"):
        closest = []
        for new, scores in runs():
            gaps = [(s[0].max() - s[0][eos]).item() for s in scores[:14] if torch.isfinite(s[0][eos])]
            closest.append(min(gaps))
        closest.sort()
        k = (target[0] + target[1]) // 2
        delta = (closest[k - 1] + closest[k]) / 2
        with torch.no_grad():
            model.final_logits_bias[0, eos] += delta
        got = n_early(runs())
        assert target[0] <= got <= target[1], (got, closest)
        return f"final_logits_bias[eos] += {delta:.3f}: {got}/{len(samples)} stop within 14"
    hidden = []
    hook = head.register_forward_hook(lambda mod, inp, out: hidden.append(inp[0].reshape(-1, inp[0].shape[-1])))
    res = runs()
    hook.remove()
    if target[0] <= n_early(res) <= target[1]:
        return f"unchanged: {n_early(res)}/{len(samples)} stop within 14"
    mean = torch.cat(hidden).mean(0)
    u = mean / mean.dot(mean)
    w0 = head.weight[eos].clone()

    def early_with(delta):
        with torch.no_grad():
            head.weight[eos] = w0 + delta * u
        return n_early(runs())

    lo, hi, delta = 0.0, None, 1.0
    for _ in range(40):  # double until enough samples stop early, then bisect
        got = early_with(delta)
        if target[0] <= got <= target[1]:
            return f"head row eos += {delta:.4f} * mean_hidden/|mean_hidden|^2: {got}/{len(samples)} stop within 14"
        if got < target[0]:
            lo = delta
        else:
            hi = delta
        delta = delta * 2 if hi is None else (lo + hi) / 2
    raise SystemExit("EOS calibration failed")


def save_checkpoint(model, folder, edits, gen):
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    # Written as the Hub's T5 checkpoints have it: tie_word_embeddings says whether the head is tied (and, for
    # t5, scaled); transformers 5.17's own save writes tie_word_embeddings true plus scale_decoder_outputs.
    cfg.pop("scale_decoder_outputs", None)
    cfg.update(edits)
    write_json(os.path.join(folder, "config.json"), cfg)
    write_json(os.path.join(folder, "generation_config.json"), dict(gen, transformers_version=transformers.__version__))


def load_checkpoint(name, folder):
    cls = {"t5": T5ForConditionalGeneration, "flan_t5": T5ForConditionalGeneration,
           "mt5": MT5ForConditionalGeneration, "bart": BartForConditionalGeneration,
           "mbart": MBartForConditionalGeneration, "marian": MarianMTModel,
           "whisper": WhisperForConditionalGeneration}[name]
    model = cls.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    return model


def check_reload(built, loaded):
    """The reloaded checkpoint must hold exactly the weights the cases were meant to run on."""
    a, b = built.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys(), a.keys() ^ b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------- text cases

GOOD_MARGIN = 1e-3  # cases are picked among candidates whose greedy margin is at least this


class TextModel:
    def __init__(self, name, model, ids, prompts, dec_prompt, prompt_texts):
        self.name, self.model, self.ids = name, model, ids
        self.prompts = prompts          # list of id lists (as the tokenizer encodes them, specials included)
        self.prompt_texts = prompt_texts
        self.dec_prompt = dec_prompt    # decoder prompt starting with the decoder start token
        self.base = {"num_beams": 1} if name == "marian" else {}  # marian's generation_config.json says 4
        self._plain = {}

    def run(self, rows, kwargs, decoder_input_ids=None):
        enc, mask = pad_right([self.prompts[i] for i in rows], self.ids["pad"])
        rec = MarginRecorder([self.ids["eos"]])
        extra = {}
        if decoder_input_ids is not None:
            extra["decoder_input_ids"] = torch.tensor(decoder_input_ids)
        with Capture() as cap, torch.no_grad():
            out = self.model.generate(input_ids=torch.tensor(enc), attention_mask=torch.tensor(mask),
                                      logits_processor=LogitsProcessorList([rec]), **extra, **kwargs)
        return {"rows": rows, "enc": enc, "mask": mask, "out": out, "margin": rec.min, "calls": cap.calls,
                "kwargs": kwargs, "decoder_input_ids": decoder_input_ids}

    def insert(self, i, new):
        """A new prompt: prompt i with `new` inserted before its (last) EOS."""
        ids = list(self.prompts[i])
        at = len(ids) - 1 - ids[::-1].index(self.ids["eos"])
        self.prompts.append(ids[:at] + new + ids[at:])
        if self.prompt_texts is not None:
            self.prompt_texts.append(None)
        return len(self.prompts) - 1

    def plain(self, i, max_new_tokens=20):
        key = (i, max_new_tokens)
        if key not in self._plain:
            self._plain[key] = self.run([i], dict(self.base, max_new_tokens=max_new_tokens))
        return self._plain[key]

    def new_tokens(self, r, row=0):
        seq = sequences_of(r["out"])[row]
        start = len(r["decoder_input_ids"][0]) if r["decoder_input_ids"] is not None else 1
        return seq[start:]


def sequences_of(out):
    return tolist(out if isinstance(out, torch.Tensor) else out.sequences)


def select(label, candidates, runner, accept, margin=True):
    """The first candidate whose run is accepted (with a healthy greedy margin when `margin`); failing that,
    the accepted one with the largest margin, then any."""
    runs = []
    for c in candidates:
        r = runner(c)
        if accept(r) and (not margin or r["margin"] >= GOOD_MARGIN):
            return r
        runs.append(r)
    good = [r for r in runs if accept(r)]
    pool = good or runs
    best = max(pool, key=lambda r: r["margin"])
    print(f"  note: {label}: no candidate fully acceptable (accepted: {len(good)}), using margin {best['margin']:.2e}")
    return best


def case_record(tm, name, r, store_scores=False, prompts=True, **more):
    gc = dict(r["kwargs"])
    rec = {"name": f"{tm.name}_{name}", "model": tm.name}
    if tm.prompt_texts is not None and prompts:
        texts = [tm.prompt_texts[i] for i in r["rows"]]
        if None in texts:
            rec["note"] = "encoder_input_ids: a prompt with two tokens inserted before its EOS"
        else:
            rec["prompts"] = texts
    rec["encoder_input_ids"] = r["enc"]
    rec["encoder_attention_mask"] = r["mask"]
    if r["decoder_input_ids"] is not None:
        rec["decoder_input_ids"] = r["decoder_input_ids"]
    rec["generation_config"] = gc
    out = r["out"]
    exp = {"sequences": sequences_of(out)}
    if not isinstance(out, torch.Tensor) and getattr(out, "sequences_scores", None) is not None:
        exp["sequences_scores"] = tolist(out.sequences_scores)
    scores = None
    if store_scores:
        scores = torch.stack(out.scores).contiguous()
        exp["scores"] = {"file": "scores.safetensors", "key": f"{rec['name']}.scores", "shape": list(scores.shape)}
    rec["expected"] = exp
    beam = r["kwargs"].get("num_beams", 1) > 1 or (tm.name == "marian" and "num_beams" not in r["kwargs"])
    rec["min_margin"] = None if beam else round(r["margin"], 6)
    rec.update(more)
    rec["effective"] = r["calls"][0]
    return rec, scores


def text_cases(tm):
    """The generate() cases for one text model; returns (records, {key: scores tensor})."""
    n = len(tm.prompts)
    singles = list(range(n))
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and len(tm.prompts[i]) != len(tm.prompts[j])]
    b = tm.base
    eos = tm.ids["eos"]
    cases, scores = [], {}

    def add(rec_scores):
        rec, s = rec_scores
        cases.append(rec)
        if s is not None:
            scores[rec["expected"]["scores"]["key"]] = s

    def mixed(r, max_new):
        """One row stops with EOS before the limit, the other runs to it."""
        start = 1 if r["decoder_input_ids"] is None else len(r["decoder_input_ids"][0])
        stops = [eos in s[start:start + max_new - 1] for s in sequences_of(r["out"])]
        return any(stops) and not all(stops)

    def finished_early(r, max_new):
        """Some row ends with a (natural) EOS before the length limit."""
        seqs = sequences_of(r["out"])
        start = 1 if r["decoder_input_ids"] is None else len(r["decoder_input_ids"][0])
        return any(eos in s[start:start + max_new - 1] for s in seqs)

    # 1. greedy with the processed scores of every step
    kw = dict(b, max_new_tokens=20, output_scores=True, return_dict_in_generate=True)
    r = select("greedy", singles, lambda i: tm.run([i], kw), lambda r: not finished_early(r, 20))
    add(case_record(tm, "greedy", r, store_scores=True))

    # 2. no length given: max_length = 20 + the decoder input length (1), as transformers counts it
    if tm.name != "marian":
        r = select("default_length", singles[3:] + singles[:3], lambda i: tm.run([i], dict(b)),
                   lambda r: not finished_early(r, 20))
        add(case_record(tm, "default_length", r))
    else:
        # marian: everything from generation_config.json (num_beams 4, max_length 64, bad_words_ids [[pad]],
        # renormalize_logits); sequences_scores come with output_scores
        kw = {"output_scores": True, "return_dict_in_generate": True}
        r = select("checkpoint_defaults", singles[3:] + singles[:3], lambda i: tm.run([i], kw), lambda r: True,
                   margin=False)
        add(case_record(tm, "checkpoint_defaults", r))

    # 3. a right-padded batch of two
    store = tm.name == "bart"
    kw = dict(b, max_new_tokens=20)
    if store:
        kw.update(output_scores=True, return_dict_in_generate=True)
    r = select("batch_padded", pairs, lambda p: tm.run(list(p), kw), lambda r: mixed(r, 20))
    add(case_record(tm, "batch_padded", r, store_scores=store))

    # 4. beam search on a padded batch: 3 beams, 2 returned, length_penalty 0.8, early_stopping True
    kw = dict(num_beams=3, num_return_sequences=2, length_penalty=0.8, early_stopping=True, max_new_tokens=15,
              output_scores=True, return_dict_in_generate=True)
    r = select("beam", pairs[1:] + pairs[:1], lambda p: tm.run(list(p), kw), lambda r: finished_early(r, 15),
               margin=False)
    add(case_record(tm, "beam", r))

    # 5. beam search, early_stopping "never" and length_penalty 1.5 (the max_length-based heuristic)
    kw = dict(num_beams=2, early_stopping="never", length_penalty=1.5, max_new_tokens=10, output_scores=True,
              return_dict_in_generate=True)
    r = select("beam_never", singles[5:] + singles[:5], lambda i: tm.run([i], kw),
               lambda r: len(tm.new_tokens(r)) >= 6, margin=False)
    add(case_record(tm, "beam_never", r, store_scores=(tm.name == "bart")))

    # 6-8. processors that read the encoder input or the history: the prompt is one where they change greedy
    for label, extra in [("encoder_repetition_penalty", {"encoder_repetition_penalty": 1.5}),
                         ("encoder_no_repeat_ngram", {"encoder_no_repeat_ngram_size": 2}),
                         ("repetition_no_repeat_ngram", {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3})]:
        kw = dict(b, max_new_tokens=20, **extra)
        cands = singles
        if label == "encoder_no_repeat_ngram":
            # a random model rarely repeats a bigram of its input, and a changed input changes its output:
            # also try prompts with a repeated token ("t t") inserted before EOS, for the tokens random models
            # fall into repeating, and prompts with the first two tokens they generate inserted
            reps = {}
            for i in singles:
                new = tm.new_tokens(tm.plain(i))
                for x, y in zip(new, new[1:]):
                    if x == y and x != eos:
                        reps[x] = reps.get(x, 0) + 1
            loops = sorted(reps, key=lambda t: (-reps[t], t))[:4]
            cands = singles + [tm.insert(i, [t, t]) for t in loops for i in singles] + \
                [tm.insert(i, tm.new_tokens(tm.plain(i))[:2]) for i in singles]
        r = select(label, cands, lambda i: tm.run([i], kw),
                   lambda r: sequences_of(r["out"]) != sequences_of(tm.plain(r["rows"][0])["out"])
                   and len(tm.new_tokens(r)) >= 6)
        differs = sequences_of(r["out"]) != sequences_of(tm.plain(r["rows"][0])["out"])
        add(case_record(tm, label, r, differs_from_plain_greedy=differs))

    # 9. min_new_tokens on a prompt whose plain greedy output ends early with EOS: EOS is masked until then
    def min_new_run(i):
        new = tm.new_tokens(tm.plain(i))
        k = new.index(eos) + 1 if eos in new[:14] else None
        if k is None:
            return {"margin": -1.0, "skip": True}
        return tm.run([i], dict(b, min_new_tokens=k + 3, max_new_tokens=20))
    r = select("min_new_tokens", singles, min_new_run, lambda r: not r.get("skip"))
    if r.get("skip"):
        raise SystemExit(f"{tm.name}: no prompt ends with EOS within 14 tokens; min_new_tokens untestable")
    plain_len = len(tm.new_tokens(tm.plain(r["rows"][0])))
    add(case_record(tm, "min_new_tokens", r, plain_greedy_new_tokens=plain_len))

    # 10. a decoder prompt (decoder start + 3 tokens), and the same without the start token: generate()
    # prepends decoder_start_token_id when no row starts with it, so both give the same sequences
    dp = [tm.dec_prompt]
    kw = dict(b, max_new_tokens=15)
    r = select("decoder_prompt", singles[2:] + singles[:2], lambda i: tm.run([i], kw, dp),
               lambda r: len(tm.new_tokens(r)) >= 6)
    add(case_record(tm, "decoder_prompt", r))
    r2 = tm.run(r["rows"], kw, [tm.dec_prompt[1:]])
    assert sequences_of(r2["out"]) == sequences_of(r["out"])
    add(case_record(tm, "decoder_prompt_without_start", r2, expect_same_as=f"{tm.name}_decoder_prompt"))

    # 11. encoder_repetition_penalty with beams: transformers gathers/scatters with the un-expanded
    # encoder_input_ids ([batch, len]) on [batch*num_beams, vocab] scores, so only the first `batch` rows
    # (here: beam 0) are changed
    if tm.name in ("t5", "bart"):
        kw = dict(num_beams=3, encoder_repetition_penalty=1.5, max_new_tokens=10, output_scores=True,
                  return_dict_in_generate=True)
        kw0 = dict(num_beams=3, max_new_tokens=10)
        r = select("encoder_repetition_penalty_beam", singles, lambda i: tm.run([i], kw),
                   lambda r: sequences_of(r["out"]) != sequences_of(tm.run(r["rows"], kw0)["out"])
                   and len(tm.new_tokens(r)) >= 6, margin=False)
        add(case_record(tm, "encoder_repetition_penalty_beam", r))

    # 12. mBART-50 style: decoder starts with </s> and the language code is forced as the first token
    if tm.name == "mbart":
        kw = dict(decoder_start_token_id=2, forced_bos_token_id=tm.ids["de_DE"], max_new_tokens=20)
        r = select("mbart50_style", singles, lambda i: tm.run([i], kw), lambda r: True)
        add(case_record(tm, "mbart50_style", r))
    return cases, scores


def text_forward(tm):
    """Two forward passes: one prompt, and a right-padded batch of two, each with a short decoder input."""
    out = {}
    d = tm.dec_prompt
    batch_dec = [d + [d[1]], [d[0]] + list(reversed(d[1:])) + [d[-1]]]
    for i, (rows, dec) in enumerate([([0], [d]), ([1, 4], batch_dec)]):
        enc, mask = pad_right([tm.prompts[j] for j in rows], tm.ids["pad"])
        with torch.no_grad():
            o = tm.model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(mask),
                         decoder_input_ids=torch.tensor(dec))
        p = f"{tm.name}.{i}."
        out[p + "encoder_input_ids"] = torch.tensor(enc, dtype=torch.int64)
        out[p + "encoder_attention_mask"] = torch.tensor(mask, dtype=torch.int64)
        out[p + "decoder_input_ids"] = torch.tensor(dec, dtype=torch.int64)
        out[p + "logits"] = o.logits.contiguous()
        out[p + "encoder_last_hidden_state"] = o.encoder_last_hidden_state.contiguous()
    return out


# ----------------------------------------------------------------------------------------------- whisper

def whisper_features(seed, batch, n_mels=80, frames=40):
    """Log-mel-like features in Whisper's normalised range (about [-1, 1.5]): smooth bands plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames)
    feats = []
    for _ in range(batch):
        freq = torch.rand(n_mels, 1, generator=g) * 6
        phase = torch.rand(n_mels, 1, generator=g) * 6.28
        x = 0.6 * torch.sin(freq * 6.28 * t[None, :] + phase) + 0.3 * torch.randn(n_mels, frames, generator=g)
        feats.append(x.clamp(-1.0, 1.5))
    return torch.stack(feats).contiguous()


class WhisperRunner:
    def __init__(self, model, vocab, gen):
        self.model, self.v, self.gen = model, vocab, gen
        self.eot = vocab["<|endoftext|>"]

    def prompt(self, lang, task="transcribe", timestamps=False):
        p = [self.v["<|startoftranscript|>"], self.v[f"<|{lang}|>"], self.v[f"<|{task}|>"]]
        return p if timestamps else p + [self.v["<|notimestamps|>"]]

    def direct(self, feats, dec, kwargs):
        """transformers' GenerationMixin.generate, Whisper's override bypassed."""
        rec = MarginRecorder([self.eot])
        with Capture() as cap, torch.no_grad():
            out = GenerationMixin.generate(self.model, input_features=feats, decoder_input_ids=torch.tensor(dec),
                                           logits_processor=LogitsProcessorList([rec]), **kwargs)
        return {"out": out, "margin": rec.min, "calls": cap.calls, "inner": None}

    def override(self, feats, kwargs):
        """WhisperForConditionalGeneration.generate; records each inner GenerationMixin.generate call."""
        rec = MarginRecorder([self.eot])
        inner = []
        orig = GenerationMixin.generate

        def recording(model, *a, **kw):
            res = orig(model, *a, **kw)
            inner.append({"decoder_input_ids": tolist(kw["decoder_input_ids"]), "sequences": sequences_of(res)})
            return res

        GenerationMixin.generate = recording
        try:
            with Capture() as cap, torch.no_grad():
                out = self.model.generate(input_features=feats, logits_processor=LogitsProcessorList([rec]), **kwargs)
        finally:
            GenerationMixin.generate = orig
        return {"out": out, "margin": rec.min, "calls": cap.calls, "inner": inner}

    def detect_margin(self, feats):
        """Gap between the two best language tokens after <|startoftranscript|> (what detect_language argmaxes)."""
        with torch.no_grad():
            logits = self.model(input_features=feats,
                                decoder_input_ids=torch.full((feats.shape[0], 1), self.v["<|startoftranscript|>"]),
                                use_cache=False).logits[:, -1]
        lang_ids = list(self.gen["lang_to_id"].values())
        top2 = torch.topk(logits[:, lang_ids], 2, dim=-1).values
        return (top2[:, 0] - top2[:, 1]).min().item()


def whisper_cases(wr):
    cases, scores, inputs = [], {}, {}
    v = wr.v

    def add(name, feats, r, entry, kwargs, dec=None, store=False, margin=True, extra_margin=None, **more):
        full = f"whisper_{name}"
        inputs[f"{full}.input_features"] = feats.clone()
        rec = {"name": full, "model": "whisper", "entry": entry,
               "input_features": {"file": "inputs.safetensors", "key": f"{full}.input_features",
                                  "shape": list(feats.shape)}}
        if dec is not None:
            rec["decoder_input_ids"] = dec
        rec["generation_config"] = kwargs
        out = r["out"]
        if isinstance(out, dict):
            exp = {"sequences": tolist(out["sequences"])}
        else:
            exp = {"sequences": sequences_of(out)}
            if not isinstance(out, torch.Tensor) and getattr(out, "sequences_scores", None) is not None:
                exp["sequences_scores"] = tolist(out.sequences_scores)
        if store:
            s = torch.stack(out.scores).contiguous()
            scores[f"{full}.scores"] = s
            exp["scores"] = {"file": "scores.safetensors", "key": f"{full}.scores", "shape": list(s.shape)}
        rec["expected"] = exp
        m = r["margin"] if margin else None
        if m is not None and extra_margin is not None:
            m = min(m, extra_margin)
        rec["min_margin"] = None if m is None else round(m, 6)
        rec.update(more)
        rec["effective"] = r["calls"][0] if len(r["calls"]) == 1 else r["calls"]
        if r["inner"] is not None:
            rec["inner_calls"] = r["inner"]
        cases.append(rec)
        return rec

    def pick(label, seeds, batch, runner, accept=lambda r: True, margin=True):
        best = None
        for s in seeds:
            f = whisper_features(s, batch)
            r = runner(f)
            r["feats"] = f
            if accept(r) and (not margin or r["margin"] >= GOOD_MARGIN):
                return r
            if best is None or r["margin"] > best["margin"]:
                best = r
        print(f"  note: whisper {label}: no seed fully acceptable, using margin {best['margin']:.2e}")
        return best

    seeds = list(range(1000, 1020))
    en = wr.prompt("en")
    # 1. greedy through GenerationMixin.generate with an explicit Whisper prompt
    kw = {"max_new_tokens": 10, "output_scores": True, "return_dict_in_generate": True}
    r = pick("greedy_direct", seeds, 1, lambda f: wr.direct(f, [en], kw),
             accept=lambda r: wr.eot not in sequences_of(r["out"])[0])
    greedy_feats = r["feats"]
    add("greedy_direct", greedy_feats, r, "GenerationMixin.generate", kw, dec=[en], store=True)

    # 2. beam search, direct
    kw = {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.8, "early_stopping": True,
          "max_new_tokens": 12, "output_scores": True, "return_dict_in_generate": True}
    r = pick("beam_direct", seeds[3:], 1, lambda f: wr.direct(f, [en], kw), margin=False)
    add("beam_direct", r["feats"], r, "GenerationMixin.generate", kw, dec=[en], margin=False)

    # 3. a batch of two with different prompts (language and task per row), direct
    dec = [en, wr.prompt("de", "translate")]
    kw = {"max_new_tokens": 15}
    r = pick("batch_direct", seeds[6:], 2, lambda f: wr.direct(f, dec, kw))
    add("batch_direct", r["feats"], r, "GenerationMixin.generate", kw, dec=dec)

    # 4. Whisper's generate, language and task given: same features as greedy_direct
    kw = {"language": "en", "task": "transcribe", "max_new_tokens": 10}
    r = wr.override(greedy_feats, kw)
    add("generate_en", greedy_feats, r, "WhisperForConditionalGeneration.generate", kw,
        same_tokens_as="whisper_greedy_direct")

    # 5. with timestamps (<|notimestamps|> left out of the prompt, WhisperTimeStampLogitsProcessor on)
    kw = {"language": "en", "task": "transcribe", "return_timestamps": True, "max_new_tokens": 20}
    ts = v["<|0.00|>"]

    def several_segments(r):  # the seek loop runs more than once
        return len(r["inner"]) > 1
    r = pick("generate_timestamps", list(range(3000, 3040)), 1, lambda f: wr.override(f, kw), accept=several_segments)
    add("generate_timestamps", r["feats"], r, "WhisperForConditionalGeneration.generate", kw)

    # 6. language detection (language=None on a multilingual model, no task), no max_new_tokens:
    # max_length = min(generation_config.max_length + prompt length, max_target_positions)
    kw = {}
    r = pick("generate_detect", seeds[12:] + seeds[:12], 1,
             lambda f: dict(wr.override(f, kw), dm=wr.detect_margin(f)),
             accept=lambda r: (r["dm"] >= GOOD_MARGIN and len(r["inner"]) == 1
                               and len(sequences_of(r["out"])[0]) >= 8))
    add("generate_detect", r["feats"], r, "WhisperForConditionalGeneration.generate", kw, extra_margin=r["dm"],
        detection_margin=round(r["dm"], 6))

    # 7. language detection per row on a batch of two, task translate. The random model predicts timestamp
    # pairs even after <|notimestamps|>, so the seek loop runs again (see README)
    kw = {"task": "translate", "max_new_tokens": 15}

    def rows_differ(r):  # the two rows detect different languages
        dec = r["inner"][0]["decoder_input_ids"]
        return r["dm"] >= GOOD_MARGIN and dec[0][1] != dec[1][1]
    r = pick("generate_detect_batch", seeds[14:] + seeds[:14], 2,
             lambda f: dict(wr.override(f, kw), dm=wr.detect_margin(f)), accept=rows_differ)
    add("generate_detect_batch", r["feats"], r, "WhisperForConditionalGeneration.generate", kw,
        extra_margin=r["dm"], detection_margin=round(r["dm"], 6))
    return cases, scores, inputs


def whisper_forward(wr):
    out = {}
    en = wr.prompt("en")
    rows = [en[:3], wr.prompt("de", "translate")[:3]]
    for i, (seed, dec) in enumerate([(2000, [en]), (2001, rows)]):
        feats = whisper_features(seed, len(dec))
        with torch.no_grad():
            o = wr.model(input_features=feats, decoder_input_ids=torch.tensor(dec))
        p = f"whisper.{i}."
        out[p + "input_features"] = feats
        out[p + "decoder_input_ids"] = torch.tensor(dec, dtype=torch.int64)
        out[p + "logits"] = o.logits.contiguous()
        out[p + "encoder_last_hidden_state"] = o.encoder_last_hidden_state.contiguous()
    return out


# ----------------------------------------------------------------------------------------------- main

def marian_prompts():
    """Marian ships no fast tokenizer: id sequences as a SentencePiece vocabulary would give them, each ending
    with </s> (0); a few repeat a bigram."""
    g = torch.Generator().manual_seed(42)
    rows = []
    for i in range(len(PROMPTS)):
        n = 5 + int(torch.randint(0, 9, (1,), generator=g))
        ids = torch.randint(2, 319, (n,), generator=g).tolist()
        if i % 3 == 1:
            ids = ids + ids[:2]
        rows.append(ids + [0])
    return rows


def check_tokenizer(folder, tok):
    """AutoTokenizer.from_pretrained(folder) must encode exactly as tokenizer.json does."""
    at = AutoTokenizer.from_pretrained(folder)
    for p in PROMPTS + ["  two  spaces", "Ünïcödé ✓"]:
        assert at(p)["input_ids"] == tok.encode(p).ids, (folder, p)
    return type(at).__name__


def merge_safetensors(path, new, drop_prefixes):
    old = load_file(path) if os.path.exists(path) else {}
    keep = {k: v for k, v in old.items() if not any(k.startswith(p) for p in drop_prefixes)}
    keep.update(new)
    save_file(dict(sorted(keep.items())), path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--only", default=None, help="comma-separated model names (default: all)")
    args = ap.parse_args()
    names = MODELS if not args.only else [n for n in args.only.split(",")]
    for n in names:
        if n not in MODELS:
            raise SystemExit(f"unknown model {n}; one of {MODELS}")
    os.makedirs(args.out, exist_ok=True)
    toks = tokenizers_for_all()

    all_cases, forward, scores, inputs = [], {}, {}, {}
    for name in names:
        print(f"{name}:")
        folder = os.path.join(args.out, "models", name)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        tok, tok_cfg = toks.get(name, (None, None))
        if name == "mbart":
            vocab = dict(size=tok.get_vocab_size(), **{l: tok.token_to_id(l) for l in MBART_LANGS})
        elif name == "whisper":
            vocab = dict(tok.get_vocab(with_added_tokens=True), size=tok.get_vocab_size())
        else:
            vocab = tok.get_vocab_size() if tok is not None else None
        built, edits, gen, ids = build(name, vocab)
        if name == "whisper":
            v = vocab
            en = [v["<|startoftranscript|>"], v["<|en|>"], v["<|transcribe|>"], v["<|notimestamps|>"]]
            samples = [{"input_features": whisper_features(sd, 1), "decoder_input_ids": torch.tensor([en])}
                       for sd in range(1000, 1012)]
        else:
            prompts = marian_prompts() if name == "marian" else [tok.encode(p).ids for p in PROMPTS]
            samples = [{"input_ids": torch.tensor([x])} for x in prompts]
        print("  eos: " + calibrate_eos(built, gen, ids, samples))
        save_checkpoint(built, folder, edits, gen)
        if tok is not None:
            save_tokenizer(tok, folder, tok_cfg)
            print(f"  tokenizer: {check_tokenizer(folder, tok)}, {tok.get_vocab_size()} tokens")
        model = load_checkpoint(name, folder)
        check_reload(built, model)
        if name in ("t5", "flan_t5", "mt5"):
            assert model.config.scale_decoder_outputs == (name == "t5") if name != "mt5" else True
            assert (model.lm_head.weight is model.shared.weight) == (name == "t5")

        if name == "whisper":
            wr = WhisperRunner(model, vocab, gen)
            cases, sc, inp = whisper_cases(wr)
            fw = whisper_forward(wr)
        else:
            if name == "marian":
                prompts, texts = marian_prompts(), None
                dec_prompt = [ids["start"], 17, 42, 5]
            else:
                prompts = [tok.encode(p).ids for p in PROMPTS]
                texts = PROMPTS
                target = tok.encode("Das Haus ist wunderbar", add_special_tokens=False).ids[:3]
                dec_prompt = [ids["start"]] + ([0] + target[:2] if name == "bart" else target)
            if name == "mbart":
                ids["de_DE"] = vocab["de_DE"]
            tm = TextModel(name, model, ids, list(prompts), dec_prompt, list(texts) if texts else None)
            cases, sc = text_cases(tm)
            inp = {}
            fw = text_forward(tm)
        for c in cases:
            print(f"  {c['name']}: margin {c['min_margin']}, {len(c['expected']['sequences'][0])} tokens")
        all_cases += cases
        forward.update(fw)
        scores.update(sc)
        inputs.update(inp)

    gpath = os.path.join(args.out, "generate.json")
    old = json.load(open(gpath)) if (args.only and os.path.exists(gpath)) else []
    merged = [c for c in old if c["model"] not in names] + all_cases
    merged.sort(key=lambda c: MODELS.index(c["model"]))  # stable: each model's cases stay in order
    write_json(gpath, merged, sort=False)
    prefixes = [f"{n}." for n in names] + [f"{n}_" for n in names]
    merge_safetensors(os.path.join(args.out, "forward.safetensors"), forward, prefixes)
    merge_safetensors(os.path.join(args.out, "scores.safetensors"), scores, prefixes)
    merge_safetensors(os.path.join(args.out, "inputs.safetensors"), inputs, prefixes)
    low = [(c["name"], c["min_margin"]) for c in merged if c["min_margin"] is not None and c["min_margin"] < 1e-4]
    print(f"{len(merged)} cases; margins below 1e-4: {low or 'none'}")


if __name__ == "__main__":
    main()
