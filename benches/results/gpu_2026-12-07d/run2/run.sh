#!/usr/bin/env bash
# The whole-layer decode kernel after the shares' combine moved to shared memory: checks, a
# per-phase trace of block 0 (eager), then batch-1 decode A/B (layer kernel off / on / 66 blocks).
set -u
OUT=${OUT:-/tmp/out}
OUT=$OUT tools/device_run.sh check-kernels > $OUT/check.log 2>&1
grep -iE "fail|mismatch|error|panick" $OUT/check_kernels.txt | head -20
grep -c "^ok" $OUT/check_kernels.txt
grep "decode_layer" $OUT/check_kernels.txt | grep -E "mlp" | grep Cooperative | head -12
TORCH_LIBS=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TORCH_LIBS:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
for shape in ${SHAPES:-qwen2.5-0.5b llama-3.2-1b}; do
    python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape" > /dev/null 2>&1
    for blocks in 132 66 atomic; do
        barrier=red; [ $blocks = atomic ] && { barrier=atomic; blocks=132; }
        LMGEN_CUDA_LAYER_BARRIER=$barrier LMGEN_CUDA_LAYER_BLOCKS=$blocks LMGEN_CUDA_GRAPHS=0 LMGEN_CUDA_LAYER_TRACE=1 timeout 100 /tmp/lmgen-bin/generate_speed \
            --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 --prompt 128 --new 16 --prefill 128 --batches 1 --reps 1 \
            2> $OUT/trace_${shape}_${blocks}_$barrier.txt > /dev/null
        python3 - "$OUT/trace_${shape}_${blocks}_$barrier.txt" "$shape blocks $blocks barrier $barrier" <<'PY'
import sys, re, statistics as st
rows = [list(map(int, re.findall(r"-?\d+", l.split(":", 1)[1]))) for l in open(sys.argv[1]) if "decode_layer trace" in l]
rows = rows[len(rows) // 4:]  # past the warm-up
names = ["norm", "qkv", "bar0", "attn", "bar1", "combine", "o", "bar2", "norm+gu", "pref", "bar3", "down"]
med = [st.median(c) for c in zip(*rows)] if rows else []
print(sys.argv[2], len(rows), "launches; median SM clocks:", ", ".join(f"{n} {m:.0f}" for n, m in zip(names, med)), "total", sum(med))
PY
    done
done
OUT=$OUT AB_ENV="${LAYER_AB:-LMGEN_CUDA_LAYER=0 LMGEN_CUDA_LAYER=coop LMGEN_CUDA_LAYER_BARRIER=atomic LMGEN_CUDA_LAYER_BLOCKS=66 LMGEN_CUDA_LAYER=0 LMGEN_CUDA_LAYER=coop}" \
    AB_SHAPES="${SHAPES:-qwen2.5-0.5b llama-3.2-1b}" AB_BATCHES=1 tools/device_run.sh env-ab > $OUT/envab.log 2>&1
grep decode_b1 $OUT/env_ab.txt | sed -E 's/\{.*decode_tok_s":([0-9.]+).*itl_p50_ms":([0-9.]+).*/\1 tok\/s p50 \2 ms/'
grep -iE "error|panick" $OUT/envab.log | head -5
