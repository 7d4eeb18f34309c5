#!/usr/bin/env python3
"""Where a profiled run's GPU time goes: reads ncu's per-kernel summary (`ncu --csv
--print-summary per-kernel --metrics gpu__time_duration.sum`, what `tools/device_run.sh
batch-profile` writes to batch_profile.csv) and prints each kernel's total time, share, launches
and mean duration, the largest first.

    python3 tools/ncu_sum.py OUT/batch_profile.csv [--top N]
"""
import argparse
import csv
import sys

#: ncu's time units, in microseconds.
UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    rows = list(csv.reader(open(args.csv)))
    hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r or "Function Name" in r), None)
    if hdr is None:
        sys.exit(f"{args.csv}: no 'Kernel Name' header in ncu's output (first lines: {rows[:3]})")
    h = rows[hdr]
    name = h.index("Kernel Name") if "Kernel Name" in h else h.index("Function Name")
    calls = next((h.index(c) for c in ("Invocations", "# Calls", "Calls") if c in h), None)
    avg = next((h.index(c) for c in ("Average", "Avg") if c in h), None)
    if avg is None:
        sys.exit(f"{args.csv}: no 'Average' column in {h}")
    unit = h.index("Metric Unit") if "Metric Unit" in h else None
    grid = h.index("Grid Size") if "Grid Size" in h else None
    out = []
    for r in rows[hdr + 1:]:
        if len(r) <= max(name, avg):
            continue
        try:
            mean = float(r[avg].replace(",", ""))
            n = int(float(r[calls].replace(",", ""))) if calls is not None else 1
        except ValueError:
            continue
        scale = UNITS.get(r[unit], 1) if unit is not None else 1
        out.append((mean * n * scale, n, mean * scale, r[name][:70], r[grid] if grid else ""))
    total = sum(o[0] for o in out) or 1.0
    print(f"total {total / 1e3:.2f} ms over {sum(o[1] for o in out)} launches")
    for t, n, a, k, g in sorted(out, reverse=True)[: args.top]:
        print(f"{t / 1e3:9.3f} ms {100 * t / total:5.1f}% {n:6d} x {a:9.2f} us  {k} {g}")


if __name__ == "__main__":
    main()
