#!/usr/bin/env bash
# Builds the CUDA `lmgen` binary on a machine without CUDA or a GPU, for the device machine
# (H100/H200, driver 580 = CUDA 13.0). The default build stays CPU-only; CI never runs this.
#
#   tools/build_cuda.sh    # -> target/cuda/dist/{lmgen,generate_speed}.xz (stripped, compressed)
#
# What it does:
# 1. nvcc, the CUDA headers and cudart from the PyPI wheels pinned to the 13.0 series (the device
#    driver JITs PTX from nvcc 13.0, not from newer ones), unpacked under target/cuda-toolkit.
if [ "${1:-}" = --kernels-src ]; then
    K=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-kernels-"$(awk '/^name = "candle-kernels"/{getline; gsub(/[^0-9.]/, ""); print; exit}' "$ROOT/Cargo.lock")" | head -n 1)
    mkdir -p "$2" && cp -r "$K/src" "$2/"
    echo "candle-kernels sources in $2/src"
    exit 0
fi

# 2. Link stubs: candle-core turns on cudarc's `dynamic-linking`, so the link needs libcuda, libnvrtc,
#    libcublas, libcublasLt and libcurand (and libnccl with `--features lmgen/nccl`, passed on to
#    cargo). No registry package ships libcuda, so each library becomes
#    a tiny .so with one empty function per symbol cudarc's bindings declare, under the real soname.
#    The stubs are for the linker only; at run time the device's real libraries are loaded.
# 3. `cargo build --release --features cuda` of the CLI and the generate_speed benchmark in their
#    own target dir (target/cuda), with CUDA_COMPUTE_CAP=90 so candle-kernels builds sm_90 code
#    without asking nvidia-smi. Both are stripped and xz-compressed into target/cuda/dist, which
#    `run` carries to the device machine (tools/gpu_compare.py unpacks and runs them).
#
# On the device machine run the binary with the library path that holds cuBLAS, NVRTC, cuRAND and
# cudart 13 (the torch environment's wheels, or the CUDA 13.0 toolkit), e.g.
#   export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:$LD_LIBRARY_PATH
# (tools/device_env.sh finds it there).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TK=${LMGEN_CUDA_TOOLKIT:-$ROOT/target/cuda-toolkit}
SITE=$TK/site
CU=$SITE/nvidia/cu13
STUBS=$TK/stubs
TARGET_DIR=${LMGEN_CUDA_TARGET_DIR:-$ROOT/target/cuda}

# 1. The 13.0 toolkit from PyPI.
if [ ! -x "$CU/bin/nvcc" ]; then
    mkdir -p "$TK/wheels" "$SITE"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$TK/wheels" \
        'nvidia-cuda-nvcc==13.0.*' 'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-crt==13.0.*' \
        'nvidia-nvvm==13.0.*' 'nvidia-cuda-cccl==13.0.*'
    for w in "$TK"/wheels/*.whl; do
        python3 -m zipfile -e "$w" "$SITE"
    done
    chmod +x "$CU"/bin/* "$CU"/nvvm/bin/* 2>/dev/null || true
fi
"$CU/bin/nvcc" --version | tail -n 2

# 2. Link stubs, from the symbols of the cudarc version in Cargo.lock.
CUDARC_VERSION=$(awk '/^name = "cudarc"/{getline; gsub(/[^0-9.]/, ""); print; exit}' "$ROOT/Cargo.lock")
# `|| true`: before the first CUDA build cudarc is not unpacked yet (a CPU build never needs it),
# and ls's exit status 2 would end the script here through pipefail.
CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VERSION" 2>/dev/null | head -n 1 || true)
if [ -z "$CUDARC_SRC" ]; then
    (cd "$ROOT" && cargo fetch --quiet)
    CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VERSION" | head -n 1)
fi
mkdir -p "$STUBS/lib"
stub() { # stub MODULE LIBNAME SONAME
    local c="$STUBS/$2.c"
    grep -oE '^pub unsafe fn [A-Za-z0-9_]+' "$CUDARC_SRC/src/$1/sys/mod.rs" | awk '{print "void " $4 "(void) {}"}' \
        | sort -u >"$c"
    cc -shared -fPIC -o "$STUBS/lib/lib$2.so" -Wl,-soname,"$3" "$c"
}
stub driver cuda libcuda.so.1
stub nvrtc nvrtc libnvrtc.so.13
stub cublas cublas libcublas.so.13
stub cublaslt cublasLt libcublasLt.so.13
stub curand curand libcurand.so.10
stub nccl nccl libnccl.so.2
ln -sf "$CU/lib/libcudart.so.13" "$STUBS/lib/libcudart.so"

# candle-kernels compiles 15 big GGUF/MoE sources into a static library one after the other
# (about 10 CPU-minutes each on a loaded 2-core machine). LMGEN_PREBUILT_KERNELS=DIR takes those
# objects from DIR instead (made on the device machine by `tools/device_run.sh kernels` from the
# same sources and flags, sm_90a); every other nvcc call goes to the real nvcc. With
# LMGEN_PREBUILT_WAIT=SECONDS the build can start before the objects arrive: it waits for each.
# The sources for `kernels`: `tools/build_cuda.sh --kernels-src DIR` copies them to DIR and exits.
# LMGEN_STUB_KERNELS=1 (when no device machine can compile them): those objects are stand-ins,
# one function per symbol of candle-kernels' ffi.rs that aborts with a message when called. Only
# GGUF weights and MoE experts on the GPU call them; a binary built so is for measuring dense
# models and must not be shipped.
NVCC_BIN="$CU/bin/nvcc"
if [ -n "${LMGEN_STUB_KERNELS:-}" ]; then
    KSRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-kernels-"$(awk '/^name = "candle-kernels"/{getline; gsub(/[^0-9.]/, ""); print; exit}' "$ROOT/Cargo.lock")" | head -n 1)
    LMGEN_PREBUILT_KERNELS=$TK/stub-kernels
    mkdir -p "$LMGEN_PREBUILT_KERNELS"
    python3 - "$KSRC/src/ffi.rs" "$LMGEN_PREBUILT_KERNELS/stubs.c" <<'PY'
import re, sys
src = re.sub(r'#\[cfg\(feature = "cutile"\)\]\s*pub fn \w+', '', open(sys.argv[1]).read())
with open(sys.argv[2], "w") as f:
    f.write("#include <stdio.h>\n#include <stdlib.h>\n")
    for n in sorted(set(re.findall(r"pub fn (\w+)\s*\(", src))):
        f.write(f'void {n}(void) {{ fputs("lmgen: built with LMGEN_STUB_KERNELS, without {n}\\n", stderr); abort(); }}\n')
PY
    cc -c -fPIC -O1 -o "$LMGEN_PREBUILT_KERNELS/moe_gguf.o" "$LMGEN_PREBUILT_KERNELS/stubs.c"
    : >"$LMGEN_PREBUILT_KERNELS/empty.c"
    for f in "$KSRC"/src/moe/*.cu "$KSRC"/src/mmvq_gguf.cu "$KSRC"/src/mmq_gguf/*.cu; do
        n=$(basename "$f" .cu)
        [ "$n" = moe_gguf ] || cc -c -fPIC -o "$LMGEN_PREBUILT_KERNELS/$n.o" "$LMGEN_PREBUILT_KERNELS/empty.c"
    done
fi
if [ -n "${LMGEN_PREBUILT_KERNELS:-}" ]; then
    NVCC_BIN="$TK/nvcc-prebuilt"
    cat >"$NVCC_BIN" <<WRAPPER
#!/usr/bin/env bash
# nvcc, except for objects found prebuilt in $LMGEN_PREBUILT_KERNELS (by source file name).
out=; src=; prev=
for a in "\$@"; do
    [ "\$prev" = -o ] && out=\$a
    case \$a in *.cu) src=\$a ;; esac
    prev=\$a
done
obj="$LMGEN_PREBUILT_KERNELS/\$(basename "\$src" .cu).o"
# LMGEN_PREBUILT_WAIT=SECONDS: the objects are still being made on the device machine; wait for
# this one (the rest of the build goes on meanwhile) before falling back to the local nvcc.
if [ "\${out%.o}" != "\$out" ] && [ -n "${LMGEN_PREBUILT_WAIT:-}" ]; then
    for _ in \$(seq ${LMGEN_PREBUILT_WAIT:-0}); do [ -f "\$obj" ] && break; sleep 1; done
fi
if [ "\${out%.o}" != "\$out" ] && [ -f "\$obj" ]; then
    exec cp "\$obj" "\$out"
fi
exec "$CU/bin/nvcc" "\$@"
WRAPPER
    chmod +x "$NVCC_BIN"
fi

# 3. The build.
export PATH="$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_HOME="$STUBS" NVCC="$NVCC_BIN"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export CARGO_TARGET_DIR="$TARGET_DIR" RUSTFLAGS="${RUSTFLAGS:-} -L native=$STUBS/lib"
cd "$ROOT"
# One cargo call for both, so features resolve once and nothing is built twice.
BENCH=$(cargo build --release --features lmgen/cuda,lmgen-cli/cuda -p lmgen-cli -p lmgen --bin lmgen \
    --bench generate_speed --message-format=json "$@" |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-message":
        print(m["message"].get("rendered", ""), file=sys.stderr)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "generate_speed":
        print(m["executable"])')
[ -n "$BENCH" ] || { echo "the generate_speed benchmark did not build" >&2; exit 1; }

# What travels to the device machine: stripped and compressed (the working tree sent there is
# limited to 64 MiB). Unpack there with `xz -d` or Python's lzma.
DIST=${LMGEN_CUDA_DIST:-$TARGET_DIR/dist}
rm -rf "$DIST" && mkdir -p "$DIST"
cp "$TARGET_DIR/release/lmgen" "$DIST/lmgen"
cp "$BENCH" "$DIST/generate_speed"
strip "$DIST/lmgen" "$DIST/generate_speed"
xz -T2 -6 -f "$DIST/lmgen" "$DIST/generate_speed"
ls -l "$DIST"

# 4. With LMGEN_CUDA_WHEEL=1, the Python wheel too (crates/lmgen-py with `--features cuda`), in
#    the same target dir so lmgen and candle are not built again: target/cuda/dist/lmgen-*.whl.
#    maturin comes from target/py-venv (as .ci/run installs it). No auditwheel repair: cuBLAS,
#    NVRTC and cuRAND are loaded at run time from the CUDA 13 install (or torch's wheels), as for
#    the binaries; `--strip` is left out because it changes the rustflags and rebuilds everything.
if [ -n "${LMGEN_CUDA_WHEEL:-}" ]; then
    "$ROOT/target/py-venv/bin/maturin" build --release --features cuda --auditwheel skip \
        -m "$ROOT/crates/lmgen-py/Cargo.toml" -o "$DIST"
    ls -l "$DIST"
fi
