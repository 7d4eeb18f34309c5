#!/usr/bin/env bash
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
tools/device_run.sh check-kernels > /dev/null 2>&1
echo "ok lines: $(grep -c '^ok' $OUT/check_kernels.txt)"; grep -v '^ok' $OUT/check_kernels.txt | head -8; grep "paged_decode" $OUT/check_kernels.txt | head -14
echo "== $(( $(date +%s) - S )) s"
tools/device_run.sh engine-check > /dev/null 2>&1
tail -4 $OUT/engine_check.txt
echo "== $(( $(date +%s) - S )) s"
TL=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TL:/usr/local/nvidia/lib64:/usr/local/nvidia/lib"
for v in grouped perhead; do
  case $v in grouped) e="LMGEN_PAGED_GROUPED=1";; perhead) e="LMGEN_PAGED_GROUPED=0";; esac
  env $e LMGEN_LOG=lmgen::engine=debug timeout 110 python3 tools/gpu_serve_bench.py --lmgen /tmp/lmgen-bin/lmgen --no-hf > $OUT/serve_$v.txt 2>&1
  mv $OUT/serve.log $OUT/serve_$v.log
  echo "-- $v"; tail -3 $OUT/serve_$v.txt
  python3 tools/engine_steps.py $OUT/serve_$v.log > $OUT/engine_steps_$v.txt; grep -E "decode forward|mixed forward|host_ms" $OUT/engine_steps_$v.txt
  echo "== $(( $(date +%s) - S )) s"
done
