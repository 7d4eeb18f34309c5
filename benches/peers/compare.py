"""lmgen against llama.cpp and candle-transformers on the same random-weight checkpoint, same
threads, same precision, same token ids and lengths, interleaved round by round (DESIGN.md
section 5). Run through ../compare.sh, which builds the binaries first.

Usage: python compare.py --lmgen BIN [--candle BIN] --shape NAME [--precisions f32,f16,q8_0,q4_k]
       [--threads 2] [--rounds 3] [--reps 3] [--decode 64] [--prefill 512] [--out DIR] [--lmgen-gguf]
Each round runs every engine once per precision (each run: a warm-up, then REPS timed
repetitions, median); the figure reported is the median over rounds. Writes OUT/SHAPE.json and
prints a Markdown table.

--lmgen-gguf: lmgen reads the very GGUF file llama.cpp reads (`lmgen bench --gguf-file`), instead
of the safetensors checkpoint quantized at load (`--quantize`): the same weights, block types and
all, for both engines (the way to compare architectures whose quantized layers lmgen only loads
from GGUF, such as the stacked experts of qwen3_moe). TTFT is the time of the prefill (the first
`--prefill` length) to the first token's logits, for both engines. The bound counts the weights
a step reads with expert tensors at `num_experts_per_tok / num_experts` (the active-parameter
bound, `lmgen bench`'s `weight_bytes_read_per_step`), plus the KV cache, over the bandwidth
`lmgen bench`'s probe measures in the same process; with --lmgen-gguf both engines read the same
bytes, so both get a % of bound.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GGUF_TYPE = {"f32": "f32", "f16": "f16", "q8_0": "q8_0", "q4_k": "q4_k_s"}


def run_rss(cmd, env=None):
    """Runs cmd; returns (stdout, peak RSS in bytes of that process, from wait4)."""
    # stderr goes to a file: read from a pipe after stdout, a chatty child (llama.cpp's load log)
    # fills the pipe and both processes wait on each other (the stall of an earlier run).
    with tempfile.TemporaryFile() as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, env=env)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        errf.seek(0)
        err = errf.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err.decode()}")
    return out.decode(), usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmgen", required=True)
    ap.add_argument("--candle", default="", help="candle-peer binary (left out when missing)")
    ap.add_argument("--shape", required=True)
    ap.add_argument("--precisions", default="f32,f16,q8_0,q4_k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "compare"))
    ap.add_argument("--lmgen-gguf", action="store_true",
                    help="lmgen reads the same GGUF file as llama.cpp (see the docstring)")
    ap.add_argument("--omp-passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE for llama.cpp (only for a machine shared with other work)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    ck_root = os.path.join(ROOT, "target", "bench-checkpoints")
    ckpt = os.path.join(ck_root, f"{a.shape}-f32")
    if not os.path.isfile(os.path.join(ckpt, "model.safetensors")):
        run_rss([a.lmgen, "init-random", "--config", os.path.join(ROOT, "benches", "configs", f"{a.shape}.json"),
             "--dtype", "f32", "--out", ckpt])
    precisions = a.precisions.split(",")
    gguf = {}
    for p in precisions:
        path = os.path.join(ck_root, f"{a.shape}-{GGUF_TYPE[p]}.gguf")
        if not os.path.isfile(path):
            f32 = os.path.join(ck_root, f"{a.shape}-f32.gguf")
            src = [f32] if p.startswith("q") and os.path.isfile(f32) else []
            run_rss([sys.executable, os.path.join(HERE, "write_gguf.py"), ckpt, path, GGUF_TYPE[p]] + src)
        gguf[p] = path
    # llama.cpp runs with its own default (spinning OpenMP threads) unless --omp-passive: passive
    # waits help only on an overloaded machine (measured: 0.8 tok/s instead of 22 under a load of 10
    # on 2 cores) and cost a quiet one most of a small model's decode (SmolLM2-135M f32: 18 tok/s
    # passive, 43 default).
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    if a.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    # candle-peer runs candle-transformers' own llama and qwen2 models (benches/candle-peer).
    model_type = json.load(open(os.path.join(ckpt, "config.json")))["model_type"]
    with_candle = os.path.isfile(a.candle) and model_type in ("llama", "qwen2")
    engines = ["lmgen", "llama.cpp"] + (["candle"] if with_candle else [])
    if "candle" not in engines:
        print(f"candle left out ({a.candle or 'no --candle'}; candle-peer runs llama and qwen2, this is {model_type})",
              file=sys.stderr)
    samples = {p: {e: [] for e in engines} for p in precisions}
    lmgen_json = {p: [] for p in precisions}
    for rnd in range(a.rounds):
        for p in precisions:
            # lmgen
            jf = os.path.join(a.out, f"{a.shape}-{p}-lmgen.json")
            cmd = [a.lmgen, "bench", "--model", ckpt, "--threads", str(a.threads), "--prefill", str(a.prefill),
                   "--batch", "1", "--prompt-len", "128", "--new-tokens", str(a.decode), "--reps", str(a.reps),
                   "--warmup", "1", "--json", jf]
            if a.lmgen_gguf:
                cmd += ["--gguf-file", gguf[p]]
            else:
                cmd += ["--quantize", p] if p.startswith("q") else ["--dtype", p]
            _, rss = run_rss(cmd, env)
            r = json.load(open(jf))
            lmgen_json[p].append(r)
            samples[p]["lmgen"].append({"prefill_tok_s": r["prefill"][0]["tok_s"], "ttft_s": r["prefill"][0]["ttft_s"],
                                        "decode_tok_s": r["decode"][0]["tok_s"], "peak_rss": rss})
            # llama.cpp
            out, rss = run_rss([sys.executable, os.path.join(HERE, "llama_cpp_peer.py"), gguf[p], str(a.threads),
                                str(a.prefill), str(a.decode), str(a.reps)], env)
            samples[p]["llama.cpp"].append(dict(json.loads(out.strip().splitlines()[-1]), peak_rss=rss))
            # candle-transformers
            if "candle" in engines:
                cand = [a.candle, gguf[p], "gguf"] if p.startswith("q") else [a.candle, ckpt, p]
                out, rss = run_rss(cand + [str(a.prefill), str(a.decode), str(a.reps)], env)
                samples[p]["candle"].append(dict(json.loads(out.strip().splitlines()[-1]), peak_rss=rss))
            print(f"round {rnd + 1}/{a.rounds} {p}: " + ", ".join(
                f"{e} {s[-1]['decode_tok_s']:.1f}/{s[-1]['prefill_tok_s']:.0f}" for e, s in samples[p].items()),
                file=sys.stderr, flush=True)
    med = lambda xs: statistics.median(xs)
    rows = []
    for p in precisions:
        lj = lmgen_json[p]
        bw = max(r["bandwidth_gb_s"] for r in lj) * 1e9
        step_bytes = lj[0]["decode"][0]["bytes_per_step"]
        row = {"precision": p, "bandwidth_gb_s": bw / 1e9, "bytes_per_step": step_bytes,
               "weights_plus_kv_bytes": lj[0]["weights_plus_kv_batch1_bytes"],
               "lmgen_peak_rss_batch1": med([r["peak_rss_bytes_batch1"] for r in lj]),
               "gguf_bytes": os.path.getsize(gguf[p])}
        for e, s in samples[p].items():
            row[e] = {k: med([x[k] for x in s]) for k in ("decode_tok_s", "prefill_tok_s", "peak_rss")}
            row[e]["ttft_s"] = med([x.get("ttft_s", a.prefill / x["prefill_tok_s"]) for x in s])
            row[e]["rounds"] = s
        row["lmgen"]["fraction_of_bound"] = row["lmgen"]["decode_tok_s"] * step_bytes / bw
        # Paired figures: on a machine whose memory rate moves between runs, each round's
        # engines run back to back, so a round's ratio (and lmgen's rate against the probe of its
        # own run) compare like with like; their medians are printed below the table.
        ls, cs = samples[p]["lmgen"], samples[p]["llama.cpp"]
        row["paired"] = {
            "decode_ratio": [x["decode_tok_s"] / y["decode_tok_s"] for x, y in zip(ls, cs)],
            "prefill_ratio": [x["prefill_tok_s"] / y["prefill_tok_s"] for x, y in zip(ls, cs)],
            "fraction_of_own_probe": [x["decode_tok_s"] * step_bytes / (r["bandwidth_gb_s"] * 1e9)
                                      for x, r in zip(ls, lj)],
        }
        if a.lmgen_gguf:  # the same file: llama.cpp reads the same bytes per step
            row["llama.cpp"]["fraction_of_bound"] = row["llama.cpp"]["decode_tok_s"] * step_bytes / bw
        rows.append(row)
    result = {"shape": a.shape, "lmgen_gguf": a.lmgen_gguf, "loadavg": os.getloadavg(), "threads": a.threads, "decode_tokens": a.decode, "prefill_tokens": a.prefill,
              "rounds": a.rounds, "reps": a.reps, "omp_passive": a.omp_passive, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "rows": rows}
    with open(os.path.join(a.out, f"{a.shape}.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"| shape | precision | decode b1 tok/s lmgen / llama.cpp / candle | ratio vs llama.cpp / candle | "
          f"% bound | prefill {a.prefill} tok/s lmgen / llama.cpp / candle | ratio vs llama.cpp / candle | "
          f"peak RSS MiB, whole run: lmgen / llama.cpp / candle | lmgen after load + decode / (weights + KV) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        nan = {"decode_tok_s": float("nan"), "prefill_tok_s": float("nan"), "peak_rss": float("nan")}
        L, C, K = r["lmgen"], r["llama.cpp"], r.get("candle", nan)
        b1, wkv = r["lmgen_peak_rss_batch1"], r["weights_plus_kv_bytes"]
        print(f"| {a.shape} | {r['precision']} | {L['decode_tok_s']:.1f} / {C['decode_tok_s']:.1f} / {K['decode_tok_s']:.1f} "
              f"| {L['decode_tok_s'] / C['decode_tok_s']:.2f}x / {L['decode_tok_s'] / K['decode_tok_s']:.2f}x "
              f"| {100 * L['fraction_of_bound']:.0f}% "
              f"| {L['prefill_tok_s']:.0f} / {C['prefill_tok_s']:.0f} / {K['prefill_tok_s']:.0f} "
              f"| {L['prefill_tok_s'] / C['prefill_tok_s']:.2f}x / {L['prefill_tok_s'] / K['prefill_tok_s']:.2f}x "
              f"| {L['peak_rss'] / 2**20:.0f} / {C['peak_rss'] / 2**20:.0f} / {K['peak_rss'] / 2**20:.0f} "
              f"| {b1 / 2**20:.0f} / {wkv / 2**20:.0f} = {b1 / wkv:.2f}x |")

    print()
    for r in rows:
        pr = r["paired"]
        span = lambda xs, f: f"{f(med(xs))} ({f(min(xs))}-{f(max(xs))})"
        x = lambda v: f"{v:.2f}x"
        pc = lambda v: f"{100 * v:.0f}%"
        print(f"{a.shape} {r['precision']}, per round (median, range): decode lmgen / llama.cpp "
              f"{span(pr['decode_ratio'], x)}, prefill {span(pr['prefill_ratio'], x)}, lmgen decode "
              f"against its own run's probe {span(pr['fraction_of_own_probe'], pc)}")

    if a.lmgen_gguf:
        print()
        print(f"| shape | precision | decode b1 tok/s lmgen / llama.cpp | lmgen / llama.cpp | % of active-parameter bound "
              f"lmgen / llama.cpp | TTFT ({a.prefill}-token prompt) ms lmgen / llama.cpp | lmgen / llama.cpp (speed) "
              f"| peak RSS MiB lmgen / llama.cpp | weights read per step MiB | GGUF MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            L, C = r["lmgen"], r["llama.cpp"]
            print(f"| {a.shape} | {r['precision']} | {L['decode_tok_s']:.2f} / {C['decode_tok_s']:.2f} "
                  f"| {L['decode_tok_s'] / C['decode_tok_s']:.2f}x "
                  f"| {100 * L['fraction_of_bound']:.0f}% / {100 * C['fraction_of_bound']:.0f}% "
                  f"| {1e3 * L['ttft_s']:.0f} / {1e3 * C['ttft_s']:.0f} | {C['ttft_s'] / L['ttft_s']:.2f}x "
                  f"| {L['peak_rss'] / 2**20:.0f} / {C['peak_rss'] / 2**20:.0f} "
                  f"| {r['bytes_per_step'] / 2**20:.0f} | {r['gguf_bytes'] / 2**20:.0f} |")


if __name__ == "__main__":
    main()
