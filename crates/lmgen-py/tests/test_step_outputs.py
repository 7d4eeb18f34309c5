"""`output_hidden_states` and `output_attentions` through the Python API: transformers' per-step
hidden states and attention weights (crates/lmgen/tests/fixtures/genconfig/outputs.json, made with
transformers 5.17) within the Rust golden tests' 1e-4, as tuples (steps) of tuples (layers) of
arrays; attention weights with `attn_implementation="eager"` only, as transformers' sdpa."""

import json
import os

import numpy as np
import pytest

import lmgen
from conftest import golden_model_dir

ROOT = os.path.dirname(os.path.abspath(__file__))
OUTPUTS = os.path.normpath(os.path.join(
    ROOT, "..", "..", "lmgen", "tests", "fixtures", "genconfig", "outputs.json"))
with open(OUTPUTS) as f:
    CASES = json.load(f)["cases"]
TOL = 1e-4


def none_as_nan(x):
    if isinstance(x, list):
        return [none_as_nan(v) for v in x]
    return float("nan") if x is None else x


def check(name, got, want):
    """`got`: steps of layers of `[b, ...]` arrays; `want`: the same as nested lists."""
    assert got is not None, f"no {name} returned"
    assert len(got) == len(want), f"{name}: {len(got)} steps, want {len(want)}"
    compared = 0
    for s, (g_step, w_step) in enumerate(zip(got, want)):
        assert len(g_step) == len(w_step), f"{name}[{s}]: {len(g_step)} layers, want {len(w_step)}"
        for l, (g, w) in enumerate(zip(g_step, w_step)):
            w = np.asarray(none_as_nan(w), dtype=np.float32)
            assert g.shape == w.shape, f"{name}[{s}][{l}]: shape {g.shape}, want {w.shape}"
            diff = np.nanmax(np.abs(g - w)) if g.size else 0.0
            assert diff <= TOL, f"{name}[{s}][{l}]: max |diff| {diff}"
            compared += g.size
    return compared


@pytest.mark.parametrize("case", CASES, ids=[f"{c['model']}-{c['name']}" for c in CASES])
def test_step_outputs_match_transformers(case):
    model = lmgen.AutoModelForCausalLM.from_pretrained(
        golden_model_dir(case["model"]), attn_implementation=case["attn_implementation"])
    out = model.generate(
        np.asarray(case["input_ids"], dtype=np.int64),
        attention_mask=np.asarray(case["attention_mask"], dtype=np.int64),
        return_dict_in_generate=True,
        **case["generation_config"],
    )
    expected = case["expected"]
    assert out.sequences.tolist() == expected["sequences"]
    assert check("hidden_states", out.hidden_states, expected["hidden_states"]) > 0
    attentions = check("attentions", out.attentions, expected["attentions"])
    assert (attentions > 0) == (case["attn_implementation"] == "eager")


def test_attn_implementation_is_checked():
    with pytest.raises(ValueError, match="attn_implementation"):
        lmgen.AutoModelForCausalLM.from_pretrained(golden_model_dir("gpt2"),
                                                   attn_implementation="flash")
