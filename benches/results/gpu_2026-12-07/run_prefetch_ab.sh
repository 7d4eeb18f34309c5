#!/usr/bin/env bash
# Call 1: the refactors' kernel checks, the L2 prefetch A/B at batch 1 (two rounds, alternated),
# the engine check.
set -u
export OUT
S=$(date +%s)
tools/device_run.sh check-kernels > /dev/null 2>&1
echo "ok lines: $(grep -c '^ok' $OUT/check_kernels.txt) of $(wc -l < $OUT/check_kernels.txt)"; grep -v '^ok' $OUT/check_kernels.txt | head -8
echo "== $(( $(date +%s) - S )) s"
TL=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TL:/usr/local/nvidia/lib64:/usr/local/nvidia/lib"
for shape in ${SHAPES:-qwen2.5-0.5b llama-3.2-1b}; do
  python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' $shape > /dev/null 2>&1
  for round in 1 2; do
    for p in 0 1 24; do
      LMGEN_CUDA_L2_PREFETCH=$p timeout 120 /tmp/lmgen-bin/generate_speed --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 --prompt 128 --new 128 --prefill 16 --batches 1 --reps 3 2>&1 \
        | grep -E '"decode_b1"|rror' | python3 -c 'import sys, json
for l in sys.stdin:
    try:
        j = json.loads(l); print(sys.argv[1], "prefetch=" + sys.argv[2], "tok/s", round(j.get("tok_s", j.get("decode_tok_s", 0)), 1), l.strip()[:160])
    except Exception: print(sys.argv[1], sys.argv[2], l.strip()[:200])' $shape $p | tee -a $OUT/l2_prefetch_ab.txt
    done
  done
  echo "== $(( $(date +%s) - S )) s"
done
tools/device_run.sh engine-check > /dev/null 2>&1; tail -1 $OUT/engine_check.txt
echo "== $(( $(date +%s) - S )) s"
