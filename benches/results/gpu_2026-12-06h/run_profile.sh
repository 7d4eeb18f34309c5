#!/usr/bin/env bash
# where the time goes now: ncu over a 64 x 1024 prefill + 2 decode steps; nsys over batch-1 decode
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader
PROFILE_BATCH=64 tools/device_run.sh batch-profile > $OUT/bp.txt 2>&1; tail -2 $OUT/batch_profile_err.txt
head -45 $OUT/batch_profile_sum.txt | cut -c1-150
echo "== $(( $(date +%s) - S )) s"
PROFILE_NEW=128 tools/device_run.sh profile > $OUT/prof.txt 2>&1
python3 - $OUT/profile_qwen2.5-0.5b.csv <<'PY' > $OUT/profile_sum.txt
import sys
txt = open(sys.argv[1]).read()
print(txt[:200])
sec = txt.split("cuda_gpu_kern_sum")[-1] if "cuda_gpu_kern_sum" in txt else txt
print(sec[:5000])
PY
cat $OUT/profile_sum.txt | cut -c1-220 | head -60
echo "== $(( $(date +%s) - S )) s"
