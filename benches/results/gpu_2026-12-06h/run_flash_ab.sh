#!/usr/bin/env bash
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
tools/device_run.sh check-kernels > /dev/null 2>&1
echo "ok lines: $(grep -c '^ok' $OUT/check_kernels.txt) of $(wc -l < $OUT/check_kernels.txt)"; grep -v '^ok' $OUT/check_kernels.txt | head -12; grep "flash" $OUT/check_kernels.txt | cut -c1-230 | head -60
echo "== $(( $(date +%s) - S )) s"
tools/device_run.sh bench-kernels > /dev/null 2>&1
grep "prompt attention" $OUT/bench_kernels.txt
echo "== $(( $(date +%s) - S )) s"
python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint("qwen2.5-0.5b", "/tmp/lmgen-ckpt")' > /dev/null 2>&1
TL=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TL:/usr/local/nvidia/lib64:/usr/local/nvidia/lib"
for p in 2048 8192; do
for m in 1 0; do
LMGEN_CUDA_FLASH_MMA=$m timeout 100 /tmp/lmgen-bin/generate_speed --model /tmp/lmgen-ckpt/qwen2.5-0.5b --device cuda --dtype bf16 --prompt 128 --new 32 --prefill $p --batches 1 --reps 3 > $OUT/gs_prefill${p}_mma$m.json 2> $OUT/gs_err${p}_$m.txt
echo "prefill $p mma $m: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("prefill"))' $OUT/gs_prefill${p}_mma$m.json 2>&1 | head -c 600)"
done
done
echo "== $(( $(date +%s) - S )) s"
