#!/usr/bin/env python3
"""Requests too big for the GPU, each followed by a small one, through `lmgen generate --request -`.

Usage (device machine): gpu_oom_check.py LMGEN MODEL_DIR STDERR_FILE

Expected: each big request is answered with an `out of GPU memory` error, the small one after it
with sequences, an 8192-token prompt (which fits) with sequences, and the process exits 0: no crash,
no hang. Prints one line per request with the
time it took and the GPU memory in use after it.
"""
import json
import os
import subprocess
import sys
import time


def main():
    lmgen, model, err_path = sys.argv[1:4]
    gc = {"do_sample": False, "max_new_tokens": 4}
    long = {"model": model, "input_ids": [[(7 * j) % 1000 for j in range(32768)]], "generation_config": gc}
    wide = {"model": model, "input_ids": [[(7 * i + j) % 1000 for j in range(128)] for i in range(16384)],
            "generation_config": gc}
    small = {"model": model, "input_ids": [[1, 2, 3, 4]], "generation_config": gc}
    fits = {"model": model, "input_ids": [[(7 * j) % 1000 for j in range(8192)]], "generation_config": gc}
    reqs = [("long prompt, 32768 tokens", long), ("small", small), ("wide batch, 16384 x 128", wide), ("small", small),
            ("prompt of 8192 tokens, fits", fits)]
    env = dict(os.environ, LMGEN_LOG="debug")
    with open(err_path, "w") as err:
        p = subprocess.Popen([lmgen, "generate", "--request", "-", "--device", "cuda", "--dtype", "bf16"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        t0 = time.time()
        ok = True
        for name, r in reqs:
            t = time.time()
            p.stdin.write(json.dumps(r) + "\n")
            p.stdin.flush()
            line = p.stdout.readline()
            used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader"],
                                  capture_output=True, text=True).stdout.strip()
            print(f"{name}: {time.time() - t:.1f}s, GPU memory in use {used}: {line.strip()[:300]}", flush=True)
            answer = json.loads(line) if line.strip() else {}
            want_error = name.startswith(("long", "wide"))
            ok &= ("out of GPU memory" in json.dumps(answer)) if want_error else ("sequences" in answer)
        p.stdin.close()
        code = p.wait(timeout=60)
    print(f"exit {code} after {time.time() - t0:.1f}s; {'as expected' if ok and code == 0 else 'NOT as expected'}")


if __name__ == "__main__":
    main()
