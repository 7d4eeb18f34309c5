#!/usr/bin/env bash
# check-kernels, then batch-1 decode with the norm in the product off/on (one build), alternated.
set -u
OUT=${OUT:-/tmp/out}
OUT=$OUT tools/device_run.sh check-kernels > $OUT/check.log 2>&1
grep -iE "fail|mismatch|error|after_norm" $OUT/check_kernels.txt | head -40
tail -3 $OUT/check_kernels.txt
for round in 1 2; do
OUT=$OUT AB_ENV="LMGEN_CUDA_NORM_IN_PRODUCT=0 LMGEN_CUDA_NORM_IN_PRODUCT=1" AB_SHAPES="${SHAPES:-qwen2.5-0.5b llama-3.2-1b llama-3.1-8b}" AB_BATCHES=1 \
    tools/device_run.sh env-ab 2>&1 | grep -E "decode_b1|rror" | sed "s/^/r$round /"
done
