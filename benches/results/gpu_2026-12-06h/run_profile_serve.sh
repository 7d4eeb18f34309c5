#!/usr/bin/env bash
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader
PROFILE_BATCH=64 tools/device_run.sh batch-profile > $OUT/bp.txt 2>&1; tail -2 $OUT/batch_profile_err.txt
head -30 $OUT/batch_profile_sum.txt | cut -c1-150
echo "== $(( $(date +%s) - S )) s"
bash benches/results/gpu_2026-12-06h/run_prefill_serve_ab.sh
