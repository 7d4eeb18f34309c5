#!/usr/bin/env bash
# lmgen vs llama.cpp (llama-cpp-python) vs candle-transformers, side by side, on random-weight
# checkpoints of real shapes. See peers/compare.py for what is measured.
#
#   benches/compare.sh [SHAPE...]            (default: smollm2-135m qwen2.5-0.5b)
#   THREADS=2 ROUNDS=3 REPS=3 PRECISIONS=f32,f16,q8_0,q4_k benches/compare.sh smollm2-135m
#   LMGEN_GGUF=1 PRECISIONS=f32,q8_0,q4_k DECODE=32 PREFILL=128 \
#       benches/compare.sh qwen3-30b-a3b-2layers qwen3-30b-a3b-2layers-dense-active
#     (lmgen reads the same GGUF file as llama.cpp: how the Qwen3-MoE row of BENCHMARKS.md is run;
#      candle-peer has no qwen3 / qwen3_moe, so candle is left out of those shapes)
#
# Needs: a Python venv at .venv-bench with llama-cpp-python (built from source) and gguf:
#   python3 -m venv .venv-bench
#   CMAKE_ARGS="-DGGML_NATIVE=ON" .venv-bench/bin/pip install --no-binary llama-cpp-python \
#       llama-cpp-python==0.3.36 gguf numpy
# Every engine is built for this CPU (-C target-cpu=native; llama.cpp with GGML_NATIVE).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv-bench/bin/python}
"$PY" -c "import llama_cpp, gguf" || { echo "missing llama-cpp-python/gguf in $PY (see the header)" >&2; exit 1; }
export RUSTFLAGS="-C target-cpu=native"
CARGO_TARGET_DIR=target/native cargo build --release -p lmgen-cli
(cd benches/candle-peer && cargo build --release)
SHAPES=("$@")
[ ${#SHAPES[@]} -eq 0 ] && SHAPES=(smollm2-135m qwen2.5-0.5b)
for shape in "${SHAPES[@]}"; do
  "$PY" benches/peers/compare.py --lmgen target/native/release/lmgen \
    --candle benches/candle-peer/target/release/candle-peer --shape "$shape" \
    --threads "${THREADS:-2}" --rounds "${ROUNDS:-3}" --reps "${REPS:-3}" \
    --precisions "${PRECISIONS:-f32,f16,q8_0,q4_k}" --decode "${DECODE:-64}" --prefill "${PREFILL:-512}" \
    ${LMGEN_GGUF:+--lmgen-gguf}
done
