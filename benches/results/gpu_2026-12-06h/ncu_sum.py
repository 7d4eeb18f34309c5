import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr = next((i for i, r in enumerate(rows) if any(c in r for c in ("Kernel Name", "Function Name"))), None)
if hdr is None:
    print("no header", rows[:5]); sys.exit()
h = rows[hdr]; print("cols", h)
name = h.index("Kernel Name") if "Kernel Name" in h else h.index("Function Name")
inv = next((h.index(c) for c in ("Invocations", "# Calls", "Calls") if c in h), None)
avg = next((h.index(c) for c in ("Average", "Avg") if c in h), None)
unit = h.index("Metric Unit") if "Metric Unit" in h else None
out = []
for r in rows[hdr + 1:]:
    if len(r) <= max(name, avg or 0): continue
    try:
        a = float(r[avg].replace(",", "")); n = int(float(r[inv].replace(",", ""))) if inv is not None else 1
    except ValueError:
        continue
    u = r[unit] if unit is not None else "?"
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}.get(u, 1)
    grid = r[h.index("Grid Size")] if "Grid Size" in h else ""
    out.append((a * n * scale, n, a * scale, r[name][:70], grid))
tot = sum(o[0] for o in out)
print(f"total {tot/1e3:.2f} ms over {sum(o[1] for o in out)} launches")
for t, n, a, k, g in sorted(out, reverse=True)[:40]:
    print(f"{t/1e3:9.3f} ms {100*t/tot:5.1f}% {n:6d} x {a:9.2f} us  {k} {g}")
