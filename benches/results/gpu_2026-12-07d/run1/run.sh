#!/usr/bin/env bash
# The whole-layer decode kernel: its checks (every launch mode), batch-1 decode under each
# LMGEN_CUDA_LAYER setting alternated, then f32 conformance with it on (the default).
set -u
OUT=${OUT:-/tmp/out}
OUT=$OUT tools/device_run.sh check-kernels > $OUT/check.log 2>&1
grep -iE "fail|mismatch|error|panick" $OUT/check_kernels.txt | head -20
grep -c "^ok" $OUT/check_kernels.txt
grep "decode_layer" $OUT/check_kernels.txt | grep -E "mlp|residual" | head -12
OUT=$OUT AB_ENV="${LAYER_AB:-LMGEN_CUDA_LAYER=0 LMGEN_CUDA_LAYER=coop LMGEN_CUDA_LAYER=plain LMGEN_CUDA_LAYER=pdl LMGEN_CUDA_LAYER=0 LMGEN_CUDA_LAYER=coop}" \
    AB_SHAPES="${SHAPES:-qwen2.5-0.5b llama-3.2-1b}" AB_BATCHES=1 tools/device_run.sh env-ab > $OUT/envab.log 2>&1
cat $OUT/env_ab.txt
grep -iE "error|panick" $OUT/envab.log | head -5
if [ -z "${NO_CONF:-}" ]; then
    CONFORMANCE_DTYPES=f32 ARCH_MODELS=all OUT=$OUT tools/device_run.sh conformance conformance-arch > $OUT/conf.log 2>&1
    grep -E "^==|passed|FAIL" $OUT/conf.log | head -30
fi
