#!/usr/bin/env python3
"""Where a serving run's engine steps go: reads the debug log of `lmgen serve`
(`LMGEN_LOG=debug`, the `engine step` and `engine forward` lines) and prints, for all steps,
decode-only steps (one token a sequence) and steps with prompt chunks: sequences, tokens, the
forward (queued and waited for, `forward_ms`), sampling (`sample_ms`) and the host's time to
queue the forward (`host_ms`).

    python3 tools/engine_steps.py $OUT/serve.log

`tools/device_run.sh serve-profile` runs the serving benchmark with debug logs and this.
"""
import re
import statistics as st
import sys

FIELD = re.compile(r"(\w+)=([\d.]+)")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def read(path):
    steps, forwards = [], []
    for line in open(path, errors="replace"):
        line = COLOUR.sub("", line)
        if "engine step" in line:
            steps.append({k: float(v) for k, v in FIELD.findall(line)})
        elif "engine forward" in line:
            forwards.append({k: float(v) for k, v in FIELD.findall(line)})
    return steps, forwards


def show(label, rows, keys):
    for k in keys:
        xs = [r[k] for r in rows if k in r]
        if xs:
            print(f"{label:>8} {k:>10}: mean {st.mean(xs):8.2f}  p50 {st.median(xs):8.2f}  "
                  f"max {max(xs):8.2f}  sum {sum(xs):9.0f}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    steps, forwards = read(sys.argv[1])
    if not steps:
        sys.exit(f"no `engine step` lines in {sys.argv[1]}: run the server with LMGEN_LOG=debug")
    decode = [r for r in steps if r.get("sequences") == r.get("tokens")]
    mixed = [r for r in steps if r.get("sequences") != r.get("tokens")]
    print(f"{len(steps)} steps ({len(decode)} decode only, {len(mixed)} with prompt chunks), "
          f"{len(forwards)} forwards")
    show("all", steps, ["sequences", "tokens", "forward_ms", "sample_ms"])
    show("decode", decode, ["sequences", "forward_ms", "sample_ms"])
    show("mixed", mixed, ["sequences", "tokens", "forward_ms", "sample_ms"])
    show("forward", forwards, ["host_ms"])
    total = sum(r.get("forward_ms", 0) + r.get("sample_ms", 0) for r in steps)
    if total > 0 and mixed:
        share = sum(r.get("forward_ms", 0) + r.get("sample_ms", 0) for r in mixed) / total
        print(f"steps with prompt chunks: {100 * share:.0f}% of the step time")


if __name__ == "__main__":
    main()
