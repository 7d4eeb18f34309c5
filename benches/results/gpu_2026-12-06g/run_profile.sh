#!/usr/bin/env bash
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader; command -v nsys ncu; ls /usr/local/cuda*/bin 2>/dev/null | grep -E "nsys|ncu" | head
PROFILE_BATCH=64 tools/device_run.sh batch-profile > $OUT/bp.txt 2>&1; cat $OUT/bp.txt | tail -2; tail -3 $OUT/batch_profile_err.txt
cat $OUT/batch_profile_sum.txt
echo "== $(( $(date +%s) - S )) s"
TL=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TL:/usr/local/nvidia/lib64:/usr/local/nvidia/lib"
for p in 2048 8192; do
timeout 100 /tmp/lmgen-bin/generate_speed --model /tmp/lmgen-ckpt/qwen2.5-0.5b --device cuda --dtype bf16 --prompt 128 --new 32 --prefill $p --batches 1,64 --reps 2 > $OUT/gs_prefill$p.json 2> $OUT/gs_err$p.txt
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in d if k in ("prefill","decode","batches","batched")})' $OUT/gs_prefill$p.json 2>&1 | head -c 1500; echo
done
echo "== $(( $(date +%s) - S )) s"
