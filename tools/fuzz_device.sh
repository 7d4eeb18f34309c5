#!/usr/bin/env bash
# Runs every fuzz target (fuzz/contracts.rs, fuzz/contracts_jsonl.rs) at once on a many-core
# machine without Rust (the device machine): the one binary of them all, built here by
# `cargo +nightly fuzz build -O all` and stripped of debug information, travels as
# target/fuzz-carry/all.xz; the seed corpora come from fuzz/corpus.
#
#   tools/fuzz_device.sh SECONDS [FORKS]    each target for SECONDS with FORKS worker processes
#
# Corpora grow in /tmp/fuzz-corpus (kept while the machine stays warm, so a second call
# continues); crash reproducers, each target's log and a summary line per target go to $OUT.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=${1:-300}
FORKS=${2:-2}
OUT=${OUT:-/tmp/fuzz-out}
BIN=/tmp/fuzz-bin
mkdir -p "$OUT" "$BIN" /tmp/fuzz-corpus
if [ -e target/fuzz-carry/all.xz ]; then
    xz -dc target/fuzz-carry/all.xz >"$BIN/all" && chmod +x "$BIN/all"
fi
TARGETS="safetensors gguf config_json generation_config chat_template tokenizer_json server_request jsonl_request logits_request"
export LMGEN_FUZZ_LLAMA="$ROOT/crates/lmgen/tests/fixtures/golden/models/llama"
nproc
pids=()
for t in $TARGETS; do
    corpus=/tmp/fuzz-corpus/$t
    mkdir -p "$corpus" "$OUT/crashes-$t"
    # Seeds are read through their links once; the grown corpus is the first folder.
    LMGEN_FUZZ_TARGET=$t "$BIN/all" "$corpus" "fuzz/corpus/$t" -fork="$FORKS" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
        -max_len=1048576 -print_final_stats=1 -artifact_prefix="$OUT/crashes-$t/" \
        >"$OUT/log-$t.txt" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for t in $TARGETS; do
    last=$(grep -E '^#[0-9]+' "$OUT/log-$t.txt" | tail -n 1)
    echo "$t: corpus $(ls /tmp/fuzz-corpus/$t | wc -l) files; crashes $(ls "$OUT/crashes-$t" | wc -l); $last"
done | tee "$OUT/summary.txt"
# The artifacts come back in one archive (at most 8 files return).
tar -C "$OUT" -czf "$OUT/crashes.tar.gz" $(cd "$OUT" && ls -d crashes-*) 2>/dev/null
tar -C "$OUT" -czf "$OUT/logs.tar.gz" $(cd "$OUT" && ls log-*.txt)
rm -rf "$OUT"/crashes-* "$OUT"/log-*.txt
