#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer of the shipped models with the `tokenizers` library.

Writes OUT/tokenizer.json and OUT/tokenizer_config.json (Hugging Face layout; transformers loads
them as `PreTrainedTokenizerFast`, lmgen as any checkpoint's tokenizer):
- byte-level BPE (GPT-2 pre-tokenizer regex, no prefix space), VOCAB_SIZE tokens in all;
- `<s>` (id 0, BOS, prepended by the post-processor as Llama does) and `</s>` (id 1, EOS: the end of
  a novel in the corpus).

Usage: python3 tools/train/train_tokenizer.py .train/corpus/train.txt .train/tokenizer
"""

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 4096
BOS, EOS = "<s>", "</s>"


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    corpus, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    paragraphs = [p for p in corpus.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    tok.train_from_iterator(paragraphs, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    tok.save(str(out / "tokenizer.json"))
    config = {
        "backend": "tokenizers",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    ids = tok.encode("It is a truth universally acknowledged").ids
    print(f"vocab {tok.get_vocab_size()}; bos {bos}, eos {tok.token_to_id(EOS)}; sample ids {ids}")
    print(repr(tok.decode(ids)))


if __name__ == "__main__":
    main()
