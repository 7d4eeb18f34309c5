"""parity_script.py run with `import transformers` and with `import lmgen`: the same answers
(token ids and text exactly, scores within 1e-3 relative). Skips when no Python with transformers
is found: set LMGEN_TRANSFORMERS_PYTHON to one (CI does not install torch). LMGEN_PYTHON_CMD is the
command line that runs the Python under test when sys.executable cannot start itself (under
qemu-user: `qemu-aarch64 -L ROOT ROOT/usr/bin/python3`, as tools/build_wheels.sh sets it)."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import GOLDEN, ROOT, close

SCRIPT = os.path.join(ROOT, "parity_script.py")


def this_python():
    """The command that runs the Python (and so the lmgen) under test."""
    cmd = os.environ.get("LMGEN_PYTHON_CMD")
    return shlex.split(cmd) if cmd else [sys.executable]


def transformers_python():
    transformers = os.environ.get("LMGEN_TRANSFORMERS_PYTHON")
    for python in ([[transformers]] if transformers else []) + [this_python()]:
        probe = subprocess.run([*python, "-c", "import transformers, torch"], capture_output=True)
        if probe.returncode == 0:
            return python
    return None


def run(python, library):
    done = subprocess.run([*python, SCRIPT, library, GOLDEN], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_same_script_same_answers_as_transformers():
    python = transformers_python()
    if python is None:
        pytest.skip("no Python with transformers and torch (set LMGEN_TRANSFORMERS_PYTHON)")
    want = run(python, "transformers")
    got = run(this_python(), "lmgen")
    assert got.keys() == want.keys()
    for model, answers in want.items():
        for key, w in answers.items():
            g = got[model][key]
            if "scores" in key:
                flat_g = flatten(g)
                flat_w = flatten(w)
                assert len(flat_g) == len(flat_w), f"{model}/{key}"
                bad = [i for i, (a, b) in enumerate(zip(flat_g, flat_w))
                       if not close(a, None if b == float("-inf") else b, 1e-3)]
                assert not bad, f"{model}/{key}: {g} != {w}"
            else:
                assert g == w, f"{model}/{key}:\n got  {g}\n want {w}"


def flatten(x):
    if isinstance(x, list):
        return [v for e in x for v in flatten(e)]
    return [x]
