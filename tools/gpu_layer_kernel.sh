#!/usr/bin/env bash
# The whole-layer decode kernel (src/cuda/decode_layer.rs) on the device machine: its kernel
# checks, a per-phase trace of block 0 (SM clocks at each phase boundary, LMGEN_CUDA_LAYER_TRACE),
# batch-1 decode with the kernel off and on alternated (tools/device_run.sh env-ab), and, with
# CONFORMANCE=1, f32 golden conformance with it on (CONFORMANCE_LAYER: another setting). Needs the CUDA build of tools/build_cuda.sh
# (target/cuda/dist, unpacked by tools/device_run.sh into /tmp/lmgen-bin).
#   OUT=$OUT bash tools/gpu_layer_kernel.sh
#   TRACE_SHAPES, AB_SHAPES (default qwen2.5-0.5b llama-3.2-1b), AB_ROUNDS (default 2)
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
OUT=$OUT tools/device_run.sh check-kernels > "$OUT/check.log" 2>&1
echo "kernel checks: $(grep -cE '^ok' "$OUT/check_kernels.txt") ok, $(grep -cE '^(FAIL|failed)' "$OUT/check_kernels.txt") failed"
TORCH_LIBS=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TORCH_LIBS:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
for shape in ${TRACE_SHAPES:-qwen2.5-0.5b llama-3.2-1b}; do
    python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape" > /dev/null 2>&1
    LMGEN_CUDA_LAYER=1 LMGEN_CUDA_LAYER_TRACE=1 timeout 100 /tmp/lmgen-bin/generate_speed \
        --model "/tmp/lmgen-ckpt/$shape" --device cuda --dtype bf16 --prompt 128 --new 16 --prefill 128 --batches 1 --reps 6 \
        2> "$OUT/trace_$shape.log" > /dev/null
    grep "decode_layer trace" "$OUT/trace_$shape.log" > "$OUT/trace_$shape.txt"
    python3 - "$OUT/trace_$shape.txt" "$shape" <<'PY'
import sys, re, statistics as st
rows = [list(map(int, re.findall(r"-?\d+", l.split(":", 1)[1]))) for l in open(sys.argv[1])]
rows = rows[24:]  # past the first call's
names = ["norm", "qkv", "bar0", "attn", "bar1", "combine", "o", "bar2", "norm+gu", "pref", "bar3", "down"]
med = [st.median(c) for c in zip(*rows)] if rows else []
print(sys.argv[2], len(rows), "layer launches; median SM clocks a phase:", ", ".join(f"{n} {m:.0f}" for n, m in zip(names, med)), "total", sum(med))
PY
done
# AB_ENV: other settings to alternate (e.g. "LMGEN_CUDA_LAYER=0 LMGEN_DEFAULTS=1": off, and
# the default, whichever layers it takes).
AB=${AB_ENV:-}
if [ -z "$AB" ]; then
    for _ in $(seq "${AB_ROUNDS:-2}"); do AB="$AB LMGEN_CUDA_LAYER=0 LMGEN_CUDA_LAYER=1"; done
fi
OUT=$OUT AB_ENV="$AB" AB_SHAPES="${AB_SHAPES:-qwen2.5-0.5b llama-3.2-1b}" AB_BATCHES=1 tools/device_run.sh env-ab > "$OUT/envab.log" 2>&1
grep decode_b1 "$OUT/env_ab.txt" | sed -E 's/\{.*decode_tok_s":([0-9.]+).*itl_p50_ms":([0-9.]+).*/\1 tok\/s p50 \2 ms/'
grep -iE "error|panick" "$OUT/envab.log" | head -5
if [ "${CONFORMANCE:-0}" = 1 ]; then
    LMGEN_CUDA_LAYER=${CONFORMANCE_LAYER:-1} CONFORMANCE_DTYPES=f32 ARCH_MODELS=all OUT=$OUT tools/device_run.sh conformance conformance-arch > "$OUT/conf.log" 2>&1
    grep -iE "^== |passed" "$OUT/conf.log" | tail -6
fi
