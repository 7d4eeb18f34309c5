"""Every golden generate case (crates/lmgen/tests/fixtures/golden/generate.json, made with
transformers) through the Python API: sequences token for token; processed scores, transition
scores and beam scores within the Rust golden tests' tolerance (1e-3 relative)."""

import numpy as np
import pytest

import lmgen
from conftest import close, golden_cases

CASES = golden_cases()
TOL = 1e-3


def test_the_golden_set_is_all_there():
    assert len(CASES) == 171, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['model']}-{c['name']}" for c in CASES])
def test_generate_case_matches_transformers(case, models):
    model = models(case["model"])
    expected = case["expected"]
    config = lmgen.GenerationConfig(**case["generation_config"])
    want_scores = "scores" in expected
    want_dict = want_scores or "sequences_scores" in expected
    kwargs = {"return_dict_in_generate": True} if want_dict else {}
    if want_scores:
        kwargs["output_scores"] = True
    assistant = models(case["assistant_model"]) if case.get("assistant_model") else None
    out = model.generate(
        np.asarray(case["input_ids"], dtype=np.int64),
        attention_mask=np.asarray(case["attention_mask"], dtype=np.int64),
        generation_config=config,
        assistant_model=assistant,
        **kwargs,
    )
    sequences = out.sequences if want_dict else out
    assert isinstance(sequences, np.ndarray) and sequences.dtype == np.int64
    assert sequences.tolist() == expected["sequences"]
    if "sequences_scores" in expected:
        got = out.sequences_scores.tolist()
        assert len(got) == len(expected["sequences_scores"])
        for g, w in zip(got, expected["sequences_scores"]):
            assert close(g, w, TOL), (got, expected["sequences_scores"])
    if not want_scores:
        return
    assert len(out.scores) == len(expected["scores"][0])
    for b, row in enumerate(expected["scores"]):
        for s, step in enumerate(row):
            got = out.scores[s][b]
            bad = [v for v, w in enumerate(step) if not close(float(got[v]), w, TOL)]
            assert not bad, f"score [{b}][{s}] differs at {bad[:5]}"
    ts = model.compute_transition_scores(
        out.sequences, out.scores, getattr(out, "beam_indices", None), normalize_logits=True
    )
    for b, row in enumerate(expected["transition_scores"]):
        for s, w in enumerate(row):
            assert close(float(ts[b][s]), w, TOL), f"transition score [{b}][{s}] {ts[b][s]} != {w}"
