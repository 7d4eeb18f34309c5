#!/usr/bin/env bash
set -u
export OUT
S=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader
tools/device_run.sh check-kernels > /dev/null 2>&1
echo "ok lines: $(grep -c '^ok' $OUT/check_kernels.txt)"; grep -v '^ok' $OUT/check_kernels.txt | head -8; grep "decode_attention BF16\|decode_attention_at BF16" $OUT/check_kernels.txt | head -12
echo "== $(( $(date +%s) - S )) s"
tools/device_run.sh engine-check > /dev/null 2>&1; tail -3 $OUT/engine_check.txt
TL=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TL:/usr/local/nvidia/lib64:/usr/local/nvidia/lib"
for sh in qwen2.5-0.5b llama-3.2-1b; do
python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' $sh > /dev/null 2>&1
for round in 1 2; do for g in 1 0; do
 for p in 128 1024; do
  b=1,64; [ $sh = llama-3.2-1b ] && b=1
  LMGEN_CUDA_GROUPED_ATTENTION=$g timeout 120 /tmp/lmgen-bin/generate_speed --model /tmp/lmgen-ckpt/$sh --device cuda --dtype bf16 --prompt $p --new 128 --prefill 16 --batches $b --reps 3 > $OUT/gs_${sh}_g${g}_p${p}_r$round.json 2>/dev/null
  python3 - "$OUT/gs_${sh}_g${g}_p${p}_r$round.json" "$sh grouped=$g prompt=$p r$round" <<'PY'
import json, sys
out = []
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["metric"] == "decode_b1": out.append(f"b1 {d['decode_tok_s']:.1f} tok/s")
    if d["metric"] == "batch" and d["batch"] > 1: out.append(f"b{d['batch']} {d['throughput_tok_s']:.0f} tok/s")
print(sys.argv[2], *out)
PY
 done
done; done; done
echo "== $(( $(date +%s) - S )) s"
