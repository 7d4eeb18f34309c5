#!/usr/bin/env bash
set -u
OUT=${OUT:-/tmp/out}
tools/device_run.sh compare --shapes qwen2.5-0.5b,llama-3.2-1b,qwen3-4b,llama-3.1-8b --hf static --batches 8 --budget 420 --drop-checkpoints > $OUT/compare.log 2>&1
tail -30 $OUT/compare.txt
cp /tmp/out/gpu_compare.* $OUT/ 2>/dev/null; ls $OUT
