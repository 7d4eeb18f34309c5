#!/usr/bin/env bash
# Builds the CPU wheels of the Python package (crates/lmgen-py) for PyPI's two Linux platforms, on
# one x86-64 Linux machine: the `wheel` profile of Cargo.toml (release code, no debug info,
# stripped), abi3 (one wheel for CPython >= 3.9), manylinux2014 (glibc 2.17).
#
#   tools/build_wheels.sh           # both: target/wheels/lmgen-*-cp39-abi3-manylinux2014_ARCH.whl
#   tools/build_wheels.sh aarch64   # one of them (x86_64 | aarch64)
#   LMGEN_WHEEL_SMOKE=1 tools/build_wheels.sh aarch64   # and run the aarch64 one under qemu (below)
#
# How: maturin's `--zig`, which links with `zig cc` against glibc 2.17 headers for the named target,
# so the host's glibc (or the lack of an aarch64 toolchain) does not matter, and C dependencies
# (onig, through tokenizers) are compiled by zig for the target too. maturin and zig come from PyPI
# into target/wheel-venv; the aarch64 Rust standard library from rustup. No target-cpu flag: the
# x86-64 wheel is baseline x86-64 (SSE2); lmgen picks its AVX2/FMA tiles at run time when the CPU
# has them. The aarch64 wheel uses candle's NEON paths (on by default on aarch64).
#
# Each target has its own cargo target dir (target/<triple>/wheel): a first build of one took 11
# minutes on the 2-core machine (shared, load 4-6). Wheels are checked after the build: tags, ELF
# machine, and that the highest GLIBC symbol version the extension needs is within manylinux2014's
# 2.17.
#
# LMGEN_WHEEL_SMOKE=1 (aarch64 only): no aarch64 machine is needed, but Debian's packages are:
# qemu-user (apt) and an arm64 Debian tree with python3, numpy and pytest made by mmdebstrap under
# target/arm64-root; the wheel is unpacked and its pytest suite run by qemu-aarch64 (about a
# minute; natively 7 s). With LMGEN_TRANSFORMERS_PYTHON set to a native Python that has
# transformers and torch, the parity test compares the emulated lmgen's answers with transformers'.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${LMGEN_WHEEL_DIR:-$ROOT/target/wheels}
VENV=$ROOT/target/wheel-venv
ARCHS=("$@")
[ ${#ARCHS[@]} -gt 0 ] || ARCHS=(x86_64 aarch64)

if [ ! -x "$VENV/bin/maturin" ] || [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q maturin==1.16.0 ziglang==0.17.1
fi
# maturin finds zig as `python -m ziglang` with the venv's python first on PATH.
export PATH="$VENV/bin:$PATH" CARGO_INCREMENTAL=0
mkdir -p "$OUT"

check_wheel() { # check_wheel WHEEL ELF_MACHINE
    local whl=$1 machine=$2 dir
    dir=$(mktemp -d)
    python -m zipfile -e "$whl" "$dir"
    echo "== $(basename "$whl")"
    grep -E '^(Tag|Root-Is-Purelib):' "$dir"/lmgen-*.dist-info/WHEEL
    local so
    so=$(ls "$dir"/lmgen/_lmgen*.so)
    file -b "$so"
    readelf -h "$so" | grep -q "Machine: *$machine" || { echo "$so is not $machine" >&2; exit 1; }
    local glibc
    glibc=$(readelf -V --wide "$so" | grep -oE 'GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' | sort -u -V | tail -n 1)
    echo "highest glibc symbol version needed: $glibc; NEEDED: $(readelf -d "$so" | grep NEEDED | grep -oE '\[[^]]+\]' | tr -d '[]' | tr '\n' ' ')"
    if [ "$(printf '%s\n' "$glibc" GLIBC_2.17 | sort -V | tail -n 1)" != GLIBC_2.17 ]; then
        echo "$whl needs $glibc, above manylinux2014's GLIBC_2.17" >&2
        exit 1
    fi
    rm -rf "$dir"
}

for arch in "${ARCHS[@]}"; do
    case $arch in
    x86_64) machine="Advanced Micro Devices X86-64" ;;
    aarch64) machine="AArch64" ;;
    *) echo "unknown arch $arch (x86_64 | aarch64)" >&2; exit 2 ;;
    esac
    triple=$arch-unknown-linux-gnu
    rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
    rm -f "$OUT"/lmgen-*"$arch".whl
    nice -n 19 maturin build --profile wheel --zig --target "$triple" --compatibility manylinux2014 \
        -m crates/lmgen-py/Cargo.toml -o "$OUT"
    check_wheel "$(ls "$OUT"/lmgen-*"$arch".whl)" "$machine"
done

if [ -n "${LMGEN_WHEEL_SMOKE:-}" ] && [ -f "$(ls "$OUT"/lmgen-*aarch64.whl 2>/dev/null | head -n 1)" ]; then
    command -v qemu-aarch64 >/dev/null || apt-get install -y -q qemu-user
    ARM=$ROOT/target/arm64-root
    if [ ! -x "$ARM/usr/bin/python3" ]; then
        command -v mmdebstrap >/dev/null || apt-get install -y -q mmdebstrap
        # `extract`: packages unpacked, no maintainer scripts (nothing runs under emulation); the
        # BLAS/LAPACK alternatives numpy needs are the links those scripts would have made.
        mmdebstrap --arch=arm64 --variant=extract --include=libc6,python3,python3-numpy,python3-pytest \
            bookworm "$ARM" http://deb.debian.org/debian
        ln -sf blas/libblas.so.3 "$ARM/usr/lib/aarch64-linux-gnu/libblas.so.3"
        ln -sf lapack/liblapack.so.3 "$ARM/usr/lib/aarch64-linux-gnu/liblapack.so.3"
    fi
    SITE=$ROOT/target/arm64-site
    rm -rf "$SITE" && python -m zipfile -e "$(ls "$OUT"/lmgen-*aarch64.whl)" "$SITE"
    # -p no:cacheprovider: nothing written into the source tree by the emulated run.
    PYTHONPATH=$SITE qemu-aarch64 -L "$ARM" "$ARM/usr/bin/python3" -c \
        'import platform, lmgen; print("lmgen imported on", platform.machine())'
    # The parity test starts the Python under test again (sys.executable is the arm64 binary,
    # which only qemu runs: LMGEN_PYTHON_CMD); it compares with transformers when
    # LMGEN_TRANSFORMERS_PYTHON names a (native) Python that has transformers and torch.
    PYTHONPATH=$SITE LMGEN_PYTHON_CMD="qemu-aarch64 -L $ARM $ARM/usr/bin/python3" \
        qemu-aarch64 -L "$ARM" "$ARM/usr/bin/python3" -m pytest -q -p no:cacheprovider \
        ${LMGEN_WHEEL_SMOKE_ARGS:-} crates/lmgen-py/tests
fi
ls -l "$OUT"
