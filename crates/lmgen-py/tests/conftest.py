"""Shared fixtures: the golden checkpoints of crates/lmgen/tests/fixtures/golden, loaded once."""

import json
import os

import pytest

import lmgen

ROOT = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.normpath(os.path.join(ROOT, "..", "..", "lmgen", "tests", "fixtures", "golden"))


def golden_model_dir(name):
    return os.path.join(GOLDEN, "models", name)


def golden_cases(file="generate.json"):
    with open(os.path.join(GOLDEN, file)) as f:
        return json.load(f)


class Models:
    """Each golden checkpoint loaded once per session."""

    def __init__(self):
        self.cache = {}

    def __call__(self, name):
        if name not in self.cache:
            self.cache[name] = lmgen.AutoModelForCausalLM.from_pretrained(golden_model_dir(name))
        return self.cache[name]


@pytest.fixture(scope="session")
def models():
    return Models()


def close(got, want, tol):
    """As the Rust golden tests: within `tol` relative to max(|want|, 1); None (-inf) only
    equals -inf."""
    if want is None:
        return got == float("-inf")
    return abs(got - want) <= tol * max(abs(want), 1.0)
