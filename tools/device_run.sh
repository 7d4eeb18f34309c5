#!/usr/bin/env bash
# On the device machine (an H100/H200 with CUDA 13 driver, torch + transformers, no Rust): unpack
# the CUDA build that tools/build_cuda.sh made (carried as target/cuda/dist), then run the
# steps named in the arguments, each writing under $OUT:
#
#   tools/device_run.sh conformance     golden cases on the GPU: f32 must match, bf16 agreement reported
#   tools/device_run.sh oom             a request too big for the GPU, then a small one: a clear error, then an answer
#   tools/device_run.sh check-kernels   lmgen's fused CUDA kernels against the candle ops they replace
#   tools/device_run.sh bench-kernels   timings of the decode kernels (gemv against cuBLAS, attention)
#   tools/device_run.sh fused-ab        batch-1 decode with and without the fused kernels, one build
#   tools/device_run.sh fuse-steps      the step-fusing launches (off by default until this passes):
#                                       checks, f32 conformance with them on, decode off/on
#   tools/device_run.sh graph-ab        decode: candle ops, fused kernels op by op, fused + CUDA graph
#   tools/device_run.sh env-ab          decode of one build under each setting of AB_ENV (e.g.
#                                       "LMGEN_CUDA_GEMV=0 LMGEN_CUDA_GEMV=1"), AB_SHAPES, AB_BATCHES
#   tools/device_run.sh profile         nsys summary of batch-1 decode (PROFILE_SHAPE, default Qwen2.5-0.5B)
#   tools/device_run.sh bench           `lmgen bench --device cuda` (BENCH_SHAPES, default Qwen2.5-0.5B and Llama-3.2-1B)
#   tools/device_run.sh engine-check    the engine's concurrent greedy completions on cuda against cpu
#                                       (golden llama, qwen2, mistral; tools/gpu_engine_check.py)
#   tools/device_run.sh serve-bench     `lmgen serve` with 64 streaming clients (prompts 128-2048, 256 new)
#                                       beside transformers generate_batch (tools/gpu_serve_bench.py)
#   tools/device_run.sh serve-profile   serve-bench (lmgen only) with the engine's debug log, and
#                                       where its steps went (tools/engine_steps.py)
#   tools/device_run.sh batch-profile   GPU time per kernel of batched decode (ncu's per-kernel summary
#                                       of generate_speed at PROFILE_BATCH rows, default 64, eager;
#                                       summed per kernel into batch_profile_sum.txt by tools/ncu_sum.py)
#   tools/device_run.sh compare [ARGS]  tools/gpu_compare.py (transformers vs lmgen), ARGS passed on
#                                       (BENCH_BIN: another generate_speed, e.g. an older build)
#   tools/device_run.sh conformance-arch  the golden-arch MoE and recurrent-state models on the GPU
#                                       (forward, generate): f32 must match, bf16 agreement reported
#                                       (ARCH_MODELS=all: every golden-arch model; CONFORMANCE_DTYPES)
#   tools/device_run.sh long-prompt     a 32k prompt against transformers, a failure inside a request
#   tools/device_run.sh python-gpu      the Python script with transformers and with lmgen's CUDA wheel
#   tools/device_run.sh whisper-rtf     Whisper-tiny/base real-time factor, lmgen vs transformers
#   tools/device_run.sh cache-check     the golden generate cases with the offloaded caches on the GPU
#   tools/device_run.sh cache-bench     tokens/s and peak memory of each cache over 4096 new tokens
#   tools/device_run.sh bench-q8        bf16 against Q8_0 weights (quantized at load) on the GPU, lmgen bench
#   tools/device_run.sh bench-moe       decode on MoE and hybrid (gated DeltaNet) shapes and their
#                                       dense / attention-only twins, lmgen vs transformers `generate`
#
# The device tool sends its session's checkout, which may not be this one: copy tools/, the golden
# fixtures (crates/lmgen/tests/fixtures/golden) and target/cuda/dist into an ignored folder of that
# checkout (e.g. target/gpu-carry), carry it, and start with `cd target/gpu-carry &&`.
# `tools/device_run.sh kernels` needs target/kernels-src (candle-kernels' src/ folder) instead.
# When the checkout's tracked files leave too little room for the binaries, send them in parts:
# the two stripped binaries (`xz -dk` of target/cuda/dist/*.xz, into DIR) as one archive, whose
# large dictionary stores their shared code once (10.2 MB against 17.6 MB for the two .xz files):
#   tar -C DIR -cf - lmgen generate_speed | xz -9e --lzma2=preset=9e,dict=192MiB | split -b 2700000 - bins.tar.xz.
# then one part per call copied to /tmp/lmgen-parts (the machine keeps /tmp while it stays warm:
# call again within its 30 s), and the last call runs this script, which unpacks
# /tmp/lmgen-parts/bins.tar.xz.* (LMGEN_PARTS).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/lmgen-out}
mkdir -p "$OUT"
BIN=/tmp/lmgen-bin
mkdir -p "$BIN"
PARTS=${LMGEN_PARTS:-/tmp/lmgen-parts}
if compgen -G "$PARTS/bins.tar.xz.*" >/dev/null; then
    cat "$PARTS"/bins.tar.xz.* | xz -d | tar -C "$BIN" -xf - && chmod +x "$BIN"/*
fi
for f in lmgen generate_speed; do
    [ -e "target/cuda/dist/$f.xz" ] || continue
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "target/cuda/dist/$f.xz" "$BIN/$f" && chmod +x "$BIN/$f"
done

# cuBLAS, cuRAND, NVRTC and cudart 13 from the torch environment (its nvidia-* wheels); libcuda
# comes with the driver. Fall back to the CUDA 13.0 toolkit's folder.
TORCH_LIBS=$(python3 -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib")))' 2>/dev/null)
LIBS=
for dir in "$TORCH_LIBS" /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
    ok=1
    for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
        [ -e "$dir/$lib" ] || ok=0
    done
    if [ $ok = 1 ]; then LIBS=$dir; break; fi
done
[ -n "$LIBS" ] || { echo "no folder holds cuBLAS/cuRAND/NVRTC/cudart 13" >&2; ls "$TORCH_LIBS" >&2; }
export LD_LIBRARY_PATH="$LIBS:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
echo "library path: $LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
[ -e "$BIN/lmgen" ] && ldd "$BIN/lmgen" | grep -E 'cuda|cublas|curand|nvrtc|cudart|not found'

GOLDEN=${GOLDEN:-crates/lmgen/tests/fixtures/golden}
GOLDEN_ARCH=${GOLDEN_ARCH:-crates/lmgen/tests/fixtures/golden-arch}
# The golden-arch models this project runs with MoE layers or recurrent state.
ARCH_MODELS=${ARCH_MODELS:-qwen3_moe,mixtral,gpt_oss,qwen3_5_text,qwen3_next,lfm2,gemma4_text,qwen3_5_mm}
if [ "$ARCH_MODELS" = all ]; then
    ARCH_MODELS=$(ls "$GOLDEN_ARCH/models" | paste -sd, -)
fi
while [ $# -gt 0 ]; do
    step=$1
    shift
    case $step in
    kernels)
        # candle-kernels' static library sources (copied to target/kernels-src by
        # tools/build_cuda.sh --kernels-src), compiled here on 16 cores with the flags its build
        # uses; tools/build_cuda.sh takes the objects back (LMGEN_PREBUILT_KERNELS).
        echo "== candle-kernels objects"
        NVCC_BIN=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc | head -n 1)
        gcc --version | head -n 1
        "$NVCC_BIN" --version | tail -n 2
        obj=/tmp/kernel-objects
        mkdir -p $obj
        (cd target/kernels-src && for f in src/moe/*.cu src/mmvq_gguf.cu src/mmq_gguf/*.cu; do
            "$NVCC_BIN" -gencode arch=compute_90a,code=sm_90a -c -o "$obj/$(basename "$f" .cu).o" --default-stream per-thread \
                --expt-relaxed-constexpr -std c++17 -O3 -Xcompiler -fPIC -Xcompiler -fPIC "$f" &
        done; wait)
        ls -l $obj
        tar -C $obj -cf - . | xz -T16 -6 | split -b 15M - "$OUT/kernels.tar.xz."
        ls -l "$OUT"
        ;;
    conformance)
        for dt in ${CONFORMANCE_DTYPES:-f32 bf16}; do
            echo "== conformance on cuda, $dt"
            timeout 300 python3 tools/conformance.py --bin "$BIN/lmgen" --golden "$GOLDEN" \
                --only forward,generate,legacy,streaming --args "--device cuda --dtype $dt" -v \
                2>&1 | tee "$OUT/conformance_cuda_$dt.txt"
        done
        ;;
    conformance-arch)
        # Full-prompt logits within 2e-4 and generate cases token for token: f32 must match
        # transformers' f32 fixtures; bf16 is agreement only (bf16 rounding changes tokens).
        for dt in ${CONFORMANCE_DTYPES:-f32 bf16}; do
            echo "== golden-arch conformance on cuda, $dt"
            timeout 300 python3 tools/conformance.py --bin "$BIN/lmgen" --golden "$GOLDEN_ARCH" \
                --only forward,generate --models "$ARCH_MODELS" --args "--device cuda --dtype $dt" -v \
                2>&1 | tee "$OUT/conformance_arch_cuda_$dt.txt"
        done
        ;;
    bench-moe)
        # Random-weight checkpoints written by transformers (tools/gpu_compare.py SHAPES): a
        # Qwen3-30B-A3B-shaped MoE and a dense model of its active parameters, a Qwen3.5-27B-shaped
        # hybrid and its attention-only twin, 4 layers each; lmgen (generate_speed) and
        # transformers eager `generate` on the same ids, bf16, batch 1 and 8.
        echo "== MoE and hybrid decode, lmgen vs transformers"
        PYTHONUNBUFFERED=1 timeout ${BENCH_MOE_TIMEOUT:-420} python3 tools/gpu_compare.py --bench "$BIN/generate_speed" \
            --shapes "${BENCH_MOE_SHAPES:-qwen3-30b-a3b-4l,qwen3-dense-a3b-4l,qwen3.5-27b-4l,qwen3.5-27b-attn-4l}" \
            --hf eager --batches 8 --prompt 128 --new 64 --prefill 512 --reps 2 --drop-checkpoints --name gpu_moe_hybrid 2>&1 |
            grep --line-buffered -v "Writing model shards\|Loading weights" | tee "$OUT/bench_moe_hybrid.txt"
        ;;
    oom)
        echo "== out of memory"
        if [ -z "${OOM_MODEL:-}" ]; then
            python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint("qwen2.5-0.5b", "/tmp/lmgen-ckpt")'
            # A tokenizer for the pipeline to load (the request gives ids, so any will do).
            cp "$GOLDEN"/models/qwen2/tokenizer*.json /tmp/lmgen-ckpt/qwen2.5-0.5b/
        fi
        timeout ${OOM_TIMEOUT:-150} python3 tools/gpu_oom_check.py "$BIN/lmgen" "${OOM_MODEL:-/tmp/lmgen-ckpt/qwen2.5-0.5b}" \
            "$OUT/oom_stderr.txt" 2>&1 | tee "$OUT/oom.txt"
        ;;
    serve-bench)
        # The OpenAI server under concurrent streaming clients beside transformers' generate_batch
        # on the same prompts (tools/gpu_serve_bench.py; SERVE_SHAPE, SERVE_CLIENTS).
        timeout 420 python3 tools/gpu_serve_bench.py --lmgen "$BIN/lmgen" --shape "${SERVE_SHAPE:-qwen2.5-0.5b}" \
            --clients "${SERVE_CLIENTS:-64}" 2>&1 | tee "$OUT/serve_bench.txt"
        ;;
    batch-profile)
        # Where a batched decode step's GPU time goes: every kernel of a generate_speed run (a
        # batch-1 and a PROFILE_BATCH-row generate of 3 new tokens after 1024-token prompts)
        # timed by ncu, summed per kernel name. Eager (LMGEN_CUDA_GRAPHS=0) so each kernel is
        # its own launch; the prompt kernels (flash, the products over 1024 rows) are named apart.
        python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' \
            "${PROFILE_SHAPE:-qwen2.5-0.5b}"
        NCU_BIN=$(command -v ncu || ls /usr/local/cuda*/bin/ncu | head -n 1)
        LMGEN_CUDA_GRAPHS=0 timeout 300 "$NCU_BIN" --csv --cache-control none --clock-control none \
            --metrics gpu__time_duration.sum --print-summary per-kernel "$BIN/generate_speed" \
            --model "/tmp/lmgen-ckpt/${PROFILE_SHAPE:-qwen2.5-0.5b}" --device cuda --dtype bf16 \
            --prompt 1024 --new 3 --prefill 16 --batches "${PROFILE_BATCH:-64}" --reps 1 \
            > "$OUT/batch_profile.csv" 2> "$OUT/batch_profile_err.txt"
        echo "ncu exit $?: $(wc -l < "$OUT/batch_profile.csv") lines in $OUT/batch_profile.csv"
        python3 tools/ncu_sum.py "$OUT/batch_profile.csv" > "$OUT/batch_profile_sum.txt" \
            && echo "per kernel: $OUT/batch_profile_sum.txt"
        ;;
    serve-profile)
        # serve-bench with the engine's debug log, then where its steps went (tools/engine_steps.py).
        LMGEN_LOG=debug timeout 420 python3 tools/gpu_serve_bench.py --lmgen "$BIN/lmgen" \
            --shape "${SERVE_SHAPE:-qwen2.5-0.5b}" --clients "${SERVE_CLIENTS:-64}" --no-hf 2>&1 \
            | tee "$OUT/serve_bench.txt" | tail -3
        python3 tools/engine_steps.py "$OUT/serve.log" | tee "$OUT/engine_steps.txt"
        ;;
    check-kernels)
        # lmgen's fused CUDA kernels (crates/lmgen/src/cuda) against the candle ops they replace.
        timeout 120 "$BIN/generate_speed" --check-kernels --device cuda 2>&1 | tee "$OUT/check_kernels.txt"
        ;;
    bench-kernels)
        # Timings of lmgen's decode kernels beside cuBLAS / the shapes they replace (cuda/kernel_bench.rs).
        timeout 200 "$BIN/generate_speed" --bench-kernels --device cuda 2>&1 | tee "$OUT/bench_kernels.txt"
        ;;
    fused-ab)
        # Batch-1 decode of one build with and without lmgen's fused kernels (generate_speed
        # --no-fused), same checkpoints and settings as `compare` (prompt 128, 128 new, bf16).
        for shape in ${FUSED_AB_SHAPES:-qwen2.5-0.5b llama-3.2-1b}; do
            python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape"
            for mode in --no-fused --fused; do
                echo "== $shape $mode"
                timeout 200 "$BIN/generate_speed" --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 \
                    --prompt 128 --new 128 --prefill 512 --batches 1 --reps 3 $mode 2>&1 | grep decode_b1 | tee -a "$OUT/fused_ab.txt"
            done
        done
        ;;
    fuse-steps)
        # The step-fusing launches (gemv_swiglu, rope_kv_write; on by default,
        # LMGEN_CUDA_FUSE_STEPS=0 turns them off): their kernel checks, f32 conformance on the
        # old and every golden-arch model with them on, then batch-1 bf16 decode of one build
        # with them off and on (FUSE_SHAPES, default the four shapes of `compare`).
        "$0" check-kernels 2>&1 | grep -E "gemv_swiglu|rope_kv_write|failed|rror" | head -40
        LMGEN_CUDA_FUSE_STEPS=1 CONFORMANCE_DTYPES=f32 "$0" conformance 2>&1 | tail -3
        LMGEN_CUDA_FUSE_STEPS=1 CONFORMANCE_DTYPES=f32 ARCH_MODELS=all "$0" conformance-arch 2>&1 |
            grep -E "FAIL|passed" | tail -8
        AB_SHAPES=${FUSE_SHAPES:-qwen2.5-0.5b llama-3.2-1b qwen3-4b llama-3.1-8b} AB_BATCHES=1 \
            AB_ENV="LMGEN_CUDA_FUSE_STEPS=0 LMGEN_CUDA_FUSE_STEPS=1" "$0" env-ab 2>&1 | grep -v "^library path"
        ;;
    cache-check)
        # Every golden generate and legacy case (old models, and the golden-arch models' generate
        # cases) with the offloaded caches on the GPU, f32: transformers' tokens, as the dynamic cache.
        for cache in ${CACHES:-offloaded offloaded_static}; do
            echo "== $cache"
            timeout 240 python3 tools/conformance.py --bin "$BIN/lmgen" --golden "$GOLDEN" --only generate,legacy \
                --args "--device cuda --dtype f32" --generation-config "{\"cache_implementation\": \"$cache\"}" -v \
                2>&1 | tee "$OUT/cache_check_$cache.txt" | tail -3
            timeout 240 python3 tools/conformance.py --bin "$BIN/lmgen" --golden "$GOLDEN_ARCH" --only generate \
                --models "$ARCH_MODELS" --args "--device cuda --dtype f32" \
                --generation-config "{\"cache_implementation\": \"$cache\"}" -v \
                2>&1 | tee "$OUT/cache_check_arch_$cache.txt" | tail -3
        done
        ;;
    cache-bench)
        # Tokens/s and peak GPU memory of each cache over a 4096-token generation (tools/gpu_cache_bench.py).
        timeout 500 python3 tools/gpu_cache_bench.py --lmgen "$BIN/lmgen" ${CACHE_BENCH_ARGS:-} 2>&1 \
            | tee "$OUT/cache_bench.txt"
        ;;
    engine-check)
        timeout 200 python3 tools/gpu_engine_check.py --bin "$BIN/lmgen" \
            --models "$GOLDEN/models/llama,$GOLDEN/models/qwen2,$GOLDEN/models/mistral" 2>&1 \
            | tee "$OUT/engine_check.txt"
        ;;
    graph-ab)
        # Decode of one build three ways: candle's ops only (--no-fused), the fused kernels with
        # every step launched op by op (LMGEN_CUDA_GRAPHS=0), and the default (fused kernels, the
        # one-token step replayed as a captured CUDA graph); same checkpoints as `compare`.
        for shape in ${GRAPH_AB_SHAPES:-qwen2.5-0.5b llama-3.2-1b}; do
            python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape"
            for mode in candle eager graph; do
                flags=--fused; env=LMGEN_CUDA_GRAPHS=1
                [ $mode = candle ] && flags=--no-fused
                [ $mode = eager ] && env=LMGEN_CUDA_GRAPHS=0
                echo "== $shape $mode"
                env $env timeout 200 "$BIN/generate_speed" --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 \
                    --prompt 128 --new 128 --prefill 512 --batches ${GRAPH_AB_BATCHES:-1,8} --reps 3 $flags 2>&1 \
                    | grep -E 'decode_b|error|Error' | sed "s/^/$mode /" | tee -a "$OUT/graph_ab.txt"
            done
        done
        ;;
    env-ab)
        # Decode of one build under each environment setting of AB_ENV (space-separated
        # VAR=VALUE words), interleaved per shape; same checkpoints and settings as `compare`.
        for shape in ${AB_SHAPES:-qwen2.5-0.5b llama-3.2-1b}; do
            python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape"
            for setting in ${AB_ENV:?AB_ENV names the settings}; do
                echo "== $shape $setting"
                env "$setting" timeout 200 "$BIN/generate_speed" --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 \
                    --prompt 128 --new 128 --prefill 512 --batches ${AB_BATCHES:-1,4,8} --reps 3 2>&1 \
                    | grep -E 'decode_b1|"batch"|error|Error' | sed "s/^/$shape $setting /" | tee -a "$OUT/env_ab.txt"
            done
        done
        ;;
    profile)
        # Kernel launches and host waits of batch-1 decode (nsys, when the machine has it):
        # generate_speed at batch 1 on the Qwen2.5-0.5B shape, the CUDA API and kernel summaries.
        shape=${PROFILE_SHAPE:-qwen2.5-0.5b}
        python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape"
        NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -n 1)
        if [ -z "$NSYS" ]; then
            echo "no nsys on this machine"
        else
            timeout 300 "$NSYS" profile -t cuda,nvtx --cuda-graph-trace=node -o "$OUT/profile_$shape" --force-overwrite true \
                "$BIN/generate_speed" --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 \
                --prompt 128 --new ${PROFILE_NEW:-64} --prefill 128 --batches 1 --reps 1 >/dev/null 2>&1
            "$NSYS" stats -q --report cuda_api_sum,cuda_gpu_kern_sum,cuda_gpu_mem_time_sum --format csv \
                "$OUT/profile_$shape.nsys-rep" >"$OUT/profile_$shape.csv" 2>&1
            rm -f "$OUT/profile_$shape.nsys-rep" "$OUT/profile_$shape.sqlite"
            head -c 6000 "$OUT/profile_$shape.csv"
        fi
        ;;
    bench)
        # `lmgen bench --device cuda` on random-weight checkpoints written by transformers.
        for shape in ${BENCH_SHAPES:-qwen2.5-0.5b llama-3.2-1b}; do
            echo "== lmgen bench --device cuda, $shape, bf16"
            python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape"
            cp "$GOLDEN"/models/qwen2/tokenizer*.json /tmp/lmgen-ckpt/$shape/
            timeout 300 "$BIN/lmgen" bench --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 \
                --prefill 128,512 --batch 1,8,32 --prompt-len 128 --new-tokens 64 --reps 3 \
                --bandwidth-mib 1024 --json "$OUT/bench_cuda_$shape.json" 2>&1 | tee "$OUT/bench_cuda_$shape.txt"
            # The generate_speed bench (streamer timestamps) on the same checkpoint, batch 1, for comparison.
            [ -e "$BIN/generate_speed" ] && timeout 200 "$BIN/generate_speed" --model /tmp/lmgen-ckpt/$shape --device cuda \
                --dtype bf16 --prompt 128 --new 64 --prefill 512 --batches 1 --reps 3 2>&1 | tee -a "$OUT/bench_cuda_$shape.txt"
        done
        ;;
    bench-q8)
        # bf16 weights against the same weights quantized to Q8_0 at load (lmgen's Q8_0 product on
        # the GPU for one row; more rows dequantize, then cuBLAS), `lmgen bench`, one process each.
        for shape in ${BENCH_SHAPES:-qwen2.5-0.5b llama-3.1-8b}; do
            python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint(sys.argv[1], "/tmp/lmgen-ckpt")' "$shape"
            cp "$GOLDEN"/models/qwen2/tokenizer*.json /tmp/lmgen-ckpt/$shape/
            for q in none q8_0; do
                args=()
                [ $q = none ] || args=(--quantize $q)
                echo "== lmgen bench --device cuda, $shape, bf16, quantize $q" | tee -a "$OUT/bench_q8.txt"
                timeout 400 "$BIN/lmgen" bench --model /tmp/lmgen-ckpt/$shape --device cuda --dtype bf16 \
                    --prefill 512 --batch 1,8 --prompt-len 128 --new-tokens 128 --reps 3 --bandwidth-mib 1024 \
                    "${args[@]}" --json "$OUT/bench_q8_${shape}_$q.json" 2>&1 | tail -12 | tee -a "$OUT/bench_q8.txt"
            done
        done
        ;;
    long-prompt)
        # A 32752-token prompt (chunked prefill) against transformers' sdpa, f32 and bf16, then a
        # memory failure provoked inside a request and a small request after it
        # (tools/gpu_long_prompt.py).
        echo "== long prompt and a failure mid-request"
        PYTHONUNBUFFERED=1 timeout ${LONG_TIMEOUT:-540} python3 tools/gpu_long_prompt.py "$BIN/lmgen" /tmp/lmgen-ckpt \
            ${LONG_ARGS:---race} 2>&1 | grep --line-buffered -v "Writing model shards\|Loading weights" |
            tee "$OUT/long_prompt.txt"
        ;;
    whisper-rtf)
        # Whisper's real-time factor on the GPU beside transformers (benches/whisper/rtf.py).
        for dt in ${WHISPER_DTYPES:-f32 bf16}; do
            echo "== Whisper real-time factor, cuda, $dt"
            PYTHONUNBUFFERED=1 timeout ${WHISPER_TIMEOUT:-300} python3 benches/whisper/rtf.py --bin "$BIN/lmgen" \
                --device cuda --dtype $dt --shapes tiny,base --new 64 --reps 5 2>&1 | tee -a "$OUT/whisper_rtf.txt"
        done
        ;;
    python-gpu)
        # benches/python/bench_generate.py with transformers and with the CUDA wheel's extension
        # (target/pywheel/_lmgen.abi3.so.xz, from `LMGEN_CUDA_WHEEL=1 tools/build_cuda.sh`, stripped)
        # on the Qwen2.5-0.5B shape (random weights), f32, batch 1 and 16, two rounds interleaved.
        echo "== Python: transformers and lmgen on cuda"
        mkdir -p /tmp/pylib && cp -r crates/lmgen-py/python/lmgen /tmp/pylib/ &&
            python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
                target/pywheel/_lmgen.abi3.so.xz /tmp/pylib/lmgen/_lmgen.abi3.so
        python3 -c 'import sys; sys.path.insert(0, "tools"); import gpu_compare as g; g.checkpoint("qwen2.5-0.5b", "/tmp/lmgen-ckpt")' 2>&1 | tail -n 1
        cp "$GOLDEN"/models/qwen2/tokenizer*.json /tmp/lmgen-ckpt/qwen2.5-0.5b/
        for round in 1 2; do
            for lib in transformers lmgen; do
                PYTHONPATH=/tmp/pylib timeout ${PY_TIMEOUT:-200} python3 benches/python/bench_generate.py $lib \
                    --model /tmp/lmgen-ckpt/qwen2.5-0.5b --device cuda --runs 5 2>&1 | grep -v "Loading weights" |
                    tee -a "$OUT/python_gpu.txt"
            done
        done
        ;;
    compare)
        echo "== transformers vs lmgen"
        PYTHONUNBUFFERED=1 python3 tools/gpu_compare.py --bench "${BENCH_BIN:-$BIN/generate_speed}" "$@" 2>&1 |
            grep --line-buffered -v "Writing model shards\|Loading weights" | tee -a "$OUT/compare.txt"
        break
        ;;
    *)
        echo "unknown step $step" >&2
        exit 2
        ;;
    esac
done
