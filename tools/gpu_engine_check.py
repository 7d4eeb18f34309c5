#!/usr/bin/env python3
"""The continuous-batching engine on the GPU against the same engine on the CPU: greedy tokens.

Starts `lmgen serve` on a golden checkpoint twice (`--device cpu`, then `--device cuda`, f32),
sends the same concurrent greedy completions to each (prompts of different lengths, so one step
mixes prompt chunks and decode tokens of several sequences; half of them with `min_tokens`, whose
rows are sampled on the host, the others picked on the GPU) and compares the texts and the
tokens' log-probabilities. The CPU
engine is checked against `generate()` by the Rust tests and `generate()` against transformers by
the golden cases, so equal texts mean the GPU engine's paged attention gives transformers' tokens.

    python3 tools/gpu_engine_check.py --bin /tmp/lmgen-bin/lmgen \
        --models crates/lmgen/tests/fixtures/golden/models/llama,crates/lmgen/tests/fixtures/golden/models/qwen2
"""
import argparse
import http.client
import json
import subprocess
import sys
import threading

PROMPTS = [
    "Hello there",
    "The quick brown fox jumps over the lazy dog and then",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. However little known",
    "Once",
    "She said that the weather would turn before the evening, and",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30",
]


# The largest difference allowed between the two devices' log-probabilities of a token: f32
# forwards on two devices round differently (about 1e-6 relative on these logits).
LOGPROB_TOL = 1e-3


def complete(port, prompt, new, out, i):
    # Every other request sets min_tokens (a logits processor: its rows are sampled on the host);
    # the others are plain greedy (picked on the GPU); all return each token's log-probability.
    req = {"model": "check", "prompt": prompt, "max_tokens": new, "temperature": 0, "logprobs": 0}
    if i % 2 == 0:
        req["min_tokens"] = new
    body = json.dumps(req)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        out[i] = f"ERROR {resp.status} {data[:200]!r}"
        return
    choice = json.loads(data)["choices"][0]
    out[i] = (choice["text"], choice["logprobs"]["token_logprobs"])


def serve(binary, model, device, new):
    cmd = [binary, "serve", "--model", model, "--device", device, "--dtype", "f32", "--port", "0",
           "--served-model-name", "check", "--max-batch-tokens", "32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = None
        while port is None:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{device} server exited without a port")
            for word in line.replace("/", " ").replace(":", " ").split():
                if word.isdigit() and int(word) > 1024:
                    port = int(word)
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        out = [None] * len(PROMPTS)
        threads = [threading.Thread(target=complete, args=(port, p, new, out, i))
                   for i, p in enumerate(PROMPTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", required=True, help="comma-separated checkpoint folders")
    ap.add_argument("--new", type=int, default=24)
    ap.add_argument("--devices", default="cpu,cuda", help="the reference device, then the one checked")
    args = ap.parse_args()
    failed = 0
    for model in args.models.split(","):
        ref_dev, dev = args.devices.split(",")
        cpu = serve(args.bin, model, ref_dev, args.new)
        gpu = serve(args.bin, model, dev, args.new)
        same, worst = 0, 0.0
        for p, a, b in zip(PROMPTS, cpu, gpu):
            ok = isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] and len(a[1]) == len(b[1])
            if ok:
                err = max((abs(x - y) for x, y in zip(a[1], b[1])), default=0.0)
                worst = max(worst, err)
                ok = err <= LOGPROB_TOL
            if ok:
                same += 1
            else:
                failed += 1
                print(f"  differs for {p[:40]!r}:\n    {ref_dev} {a!r}\n    {dev} {b!r}")
        print(f"{model}: {same}/{len(PROMPTS)} concurrent completions equal on {dev} and {ref_dev} "
              f"(log-probabilities within {worst:.1e})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
