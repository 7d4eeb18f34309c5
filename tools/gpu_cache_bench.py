#!/usr/bin/env python3
"""Each `cache_implementation` on the GPU over a long generation: tokens/s and device memory.

For every cache and batch size, one `lmgen generate --request -` process (bf16, random weights of
the shape, made by tools/gpu_compare.py's `checkpoint`, with tools/gpu_serve_bench.py's
word-level tokenizer) runs a warm-up request, then a request of
`--new` greedy tokens after a `--prompt`-token prompt (`min_new_tokens` = `max_new_tokens`, so
every row runs to the end). The generation's time is between the two responses' lines; the
process's peak GPU memory (NVML, every 10 ms: the CUDA context, weights, pools and cache
together) is tools/gpu_compare.py's `PeakMem`.

    python3 tools/gpu_cache_bench.py --lmgen /tmp/lmgen-bin/lmgen [--shape qwen2.5-0.5b]
        [--caches dynamic,offloaded] [--batches 1,16] [--prompt 128] [--new 4096]
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_compare as g  # noqa: E402
import gpu_serve_bench as sb  # noqa: E402


def run(lmgen, ckpt, cache, batch, prompt, new, vocab):
    ids = [[(7 + 13 * i + 31 * r) % (vocab - 1) + 1 for i in range(prompt)] for r in range(batch)]
    cfg = {"do_sample": False, "max_new_tokens": new, "min_new_tokens": new, "cache_implementation": cache}
    warm = {"model": ckpt, "input_ids": ids, "generation_config": dict(cfg, max_new_tokens=8, min_new_tokens=8)}
    req = {"model": ckpt, "input_ids": ids, "generation_config": cfg}
    proc = subprocess.Popen([lmgen, "generate", "--request", "-", "--device", "cuda", "--dtype", "bf16"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = g.PeakMem(proc.pid)
    proc.stdin.write(json.dumps(warm) + "\n")
    proc.stdin.flush()
    first = proc.stdout.readline()
    t = time.perf_counter()
    proc.stdin.write(json.dumps(req) + "\n")
    proc.stdin.close()
    second = proc.stdout.readline()
    wall = time.perf_counter() - t
    proc.wait(timeout=60)
    res = {"cache": cache, "batch": batch, "prompt": prompt, "new": new, "wall_s": wall,
           "tok_s": batch * new / wall, **peak.done()}
    out = json.loads(second) if second.strip() else {}
    if "sequences" not in out:
        res["error"] = (out.get("error") or json.loads(first or "{}").get("error") or proc.stderr.read()[-500:])
    else:
        res["tokens_ok"] = all(len(s) == prompt + new for s in out["sequences"])
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmgen", required=True)
    ap.add_argument("--shape", default="qwen2.5-0.5b")
    ap.add_argument("--caches", default="dynamic,offloaded")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=4096)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/lmgen-out"))
    args = ap.parse_args()
    cfg, ckpt = g.checkpoint(args.shape, "/tmp/lmgen-ckpt")
    sb.tokenizer(ckpt, cfg.vocab_size)  # `lmgen generate` loads one
    rows = []
    for b in map(int, args.batches.split(",")):
        for cache in args.caches.split(","):
            r = run(args.lmgen, ckpt, cache, b, args.prompt, args.new, cfg.vocab_size)
            g.log("cache", r)
            rows.append(r)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cache_bench.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"\n{args.shape}, bf16, prompt {args.prompt}, {args.new} new tokens")
    print("| cache | batch | tok/s | process peak GPU memory |")
    print("|---|---:|---:|---:|")
    for r in rows:
        tail = f" ({str(r['error'])[:160]})" if "error" in r else ""
        print(f"| {r['cache']} | {r['batch']} | {r['tok_s']:.1f} | {r['peak_gpu_gib']:.2f} GiB |{tail}")


if __name__ == "__main__":
    main()
