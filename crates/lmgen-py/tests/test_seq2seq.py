"""Encoder-decoder models through the Python API (crates/lmgen/tests/fixtures/golden-seq2seq, made
with transformers 5.17): every case of T5, Flan-T5, mT5, BART and mBART token for token,
`input_ids` read as the encoder's input and `decoder_input_ids` as the decoder's prompt. (The
golden Marian checkpoint, models/marian, has no tokenizer files, which loading a model here needs;
the Rust golden tests run it. A Marian checkpoint with its sentencepiece tokenizer, from
golden-seq2seq/marian-text, runs from text below.)"""

import json
import os

import numpy as np
import pytest

import lmgen

ROOT = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.normpath(
    os.path.join(ROOT, "..", "..", "lmgen", "tests", "fixtures", "golden-seq2seq"))
TEXT_MODELS = ("t5", "flan_t5", "mt5", "bart", "mbart")

with open(os.path.join(GOLDEN, "generate.json")) as f:
    CASES = json.load(f)
TEXT_CASES = [c for c in CASES if c["model"] in TEXT_MODELS]


@pytest.fixture(scope="module")
def seq2seq_models():
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = lmgen.AutoModelForSeq2SeqLM.from_pretrained(
                os.path.join(GOLDEN, "models", name))
        return cache[name]

    return load


def test_every_text_family_has_cases():
    assert {c["model"] for c in TEXT_CASES} == set(TEXT_MODELS)


@pytest.mark.parametrize("case", TEXT_CASES, ids=[c["name"] for c in TEXT_CASES])
def test_text_case_matches_transformers(case, seq2seq_models):
    model = seq2seq_models(case["model"])
    config = dict(case["generation_config"])
    kwargs = {}
    if case.get("decoder_input_ids") is not None:
        kwargs["decoder_input_ids"] = np.asarray(case["decoder_input_ids"], dtype=np.int64)
    out = model.generate(
        np.asarray(case["encoder_input_ids"], dtype=np.int64),
        attention_mask=np.asarray(case["encoder_attention_mask"], dtype=np.int64),
        **config,
        **kwargs,
    )
    if config.get("return_dict_in_generate"):
        assert type(out).__name__ in ("GenerateEncoderDecoderOutput",
                                      "GenerateBeamEncoderDecoderOutput")
        sequences = out.sequences
    else:
        sequences = out
    assert sequences.tolist() == case["expected"]["sequences"]


def test_a_decoder_only_checkpoint_is_not_a_seq2seq_model():
    llama = os.path.join(GOLDEN, "..", "golden", "models", "llama")
    with pytest.raises(ValueError, match="not an encoder-decoder model"):
        lmgen.AutoModelForSeq2SeqLM.from_pretrained(llama)


def test_features_go_to_an_audio_encoder_only(seq2seq_models):
    model = seq2seq_models("t5")
    with pytest.raises(ValueError, match="input_features"):
        model.generate(input_features=np.zeros((1, 80, 40), dtype=np.float32), max_new_tokens=2)


def test_a_marian_checkpoint_runs_from_text():
    """source.spm / target.spm / vocab.json and no tokenizer.json: transformers' MarianTokenizer
    ids, greedy sequences and decoded text (golden-seq2seq/marian-text/cases.json)."""
    marian = os.path.join(GOLDEN, "marian-text")
    with open(os.path.join(marian, "cases.json")) as f:
        cases = json.load(f)
    folder = os.path.join(marian, "marian_text")
    tokenizer = lmgen.AutoTokenizer.from_pretrained(folder)
    model = lmgen.AutoModelForSeq2SeqLM.from_pretrained(folder)
    for case in cases["generate"]:
        ids = tokenizer(case["prompt"])["input_ids"]
        assert list(ids) == case["input_ids"]
        out = model.generate(np.asarray([ids], dtype=np.int64))
        assert out.tolist() == [case["sequence"]]
        assert tokenizer.decode(case["sequence"], skip_special_tokens=True) == case["text"]
