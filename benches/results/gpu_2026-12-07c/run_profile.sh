#!/usr/bin/env bash
set -u
OUT=${OUT:-/tmp/out}
PROFILE_SHAPE=qwen2.5-0.5b PROFILE_BATCH=1 tools/device_run.sh batch-profile > $OUT/bp.log 2>&1
tail -3 $OUT/bp.log
head -30 $OUT/batch_profile_sum.txt
rm -f $OUT/batch_profile.csv
