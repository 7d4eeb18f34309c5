#!/usr/bin/env bash
# correctness: kernel checks, f32 conformance (old + golden-arch), the engine against the CPU;
# $1: a pattern of check-kernels lines to show whole (default: qkv_heads)
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader
tools/device_run.sh check-kernels > /dev/null 2>&1
echo "ok lines: $(grep -c '^ok' $OUT/check_kernels.txt) of $(wc -l < $OUT/check_kernels.txt)"; grep -v '^ok' $OUT/check_kernels.txt | head -12; grep -E "${1:-qkv_heads}" $OUT/check_kernels.txt | cut -c1-200
echo "== $(( $(date +%s) - S )) s"
CONFORMANCE_DTYPES=f32 tools/device_run.sh conformance > /dev/null 2>&1
tail -4 $OUT/conformance_cuda_f32.txt
echo "== $(( $(date +%s) - S )) s"
CONFORMANCE_DTYPES=f32 ARCH_MODELS=all tools/device_run.sh conformance-arch > /dev/null 2>&1
tail -4 $OUT/conformance_arch_cuda_f32.txt
echo "== $(( $(date +%s) - S )) s"
tools/device_run.sh engine-check > /dev/null 2>&1
tail -3 $OUT/engine_check.txt
echo "== $(( $(date +%s) - S )) s"
