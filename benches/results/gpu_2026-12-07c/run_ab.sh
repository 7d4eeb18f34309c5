#!/usr/bin/env bash
# check-kernels on the new build, then batch-1 decode old/new alternated on two shapes.
set -u
OUT=${OUT:-/tmp/out}
tools/device_run.sh check-kernels > $OUT/check.log 2>&1
grep -iE "fail|mismatch|error|attention" $OUT/check_kernels.txt | head -40
tail -3 $OUT/check_kernels.txt
TORCH_LIBS=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
export LD_LIBRARY_PATH="$TORCH_LIBS:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" target/gpu-ab/old/generate_speed.xz /tmp/gs-old
chmod +x /tmp/gs-old
cp /tmp/lmgen-bin/generate_speed /tmp/gs-new
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for shape in ${SHAPES:-qwen2.5-0.5b llama-3.1-8b}; do
    python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape" > /dev/null 2>&1
    for round in 1 2; do
        for v in old new; do
            timeout 150 /tmp/gs-$v --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 \
                --prompt 128 --new 128 --prefill 512 --batches 1 --reps 3 2>&1 \
                | grep -E 'decode_b1|error|Error' | sed "s/^/$shape $v r$round /" | tee -a $OUT/ab.txt
        done
    done
done
