#!/usr/bin/env bash
# f32 conformance on the GPU (old and every golden-arch model) at main's code (= 800ec1c).
set -u
export OUT
S=$(date +%s)
CONFORMANCE_DTYPES=f32 tools/device_run.sh conformance > /dev/null 2>&1
tail -4 $OUT/conformance_cuda_f32.txt
echo "== $(( $(date +%s) - S )) s"
CONFORMANCE_DTYPES=f32 ARCH_MODELS=all tools/device_run.sh conformance-arch > /dev/null 2>&1
tail -3 $OUT/conformance_arch_cuda_f32.txt
echo "== $(( $(date +%s) - S )) s"
