#!/usr/bin/env bash
# speed: prefill with the fused heads on / off, the 64-client engine run (lmgen only)
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint("qwen2.5-0.5b", "/tmp/lmgen-ckpt")' > /dev/null 2>&1
TL=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TL:/usr/local/nvidia/lib64:/usr/local/nvidia/lib"
for p in 2048 8192; do
for e in "LMGEN_CUDA_QKV_HEADS=1" "LMGEN_CUDA_QKV_HEADS=0" "LMGEN_CUDA_QKV_HEADS=0 LMGEN_CUDA_FLASH_MMA=0"; do
env $e timeout 100 /tmp/lmgen-bin/generate_speed --model /tmp/lmgen-ckpt/qwen2.5-0.5b --device cuda --dtype bf16 --prompt 128 --new 32 --prefill $p --batches 1 --reps 3 2>/dev/null | grep '"prefill"' | sed "s/^/$e /"
done
done
echo "== $(( $(date +%s) - S )) s"
for v in new base; do
  case $v in new) e="LMGEN_CUDA_FLASH_MMA=1";; base) e="LMGEN_CUDA_FLASH_MMA=0 LMGEN_CUDA_QKV_HEADS=0";; esac
  env $e LMGEN_LOG=lmgen::engine=debug timeout 150 python3 tools/gpu_serve_bench.py --lmgen /tmp/lmgen-bin/lmgen --no-hf > $OUT/serve_$v.txt 2>&1
  mv $OUT/serve.log $OUT/serve_$v.log 2>/dev/null
  echo "-- $v"; tail -3 $OUT/serve_$v.txt
  python3 tools/engine_steps.py $OUT/serve_$v.log > $OUT/engine_steps_$v.txt 2>&1; grep -E "decode forward|mixed forward|prompt|host_ms" $OUT/engine_steps_$v.txt | head -8
  echo "== $(( $(date +%s) - S )) s"
done
