#!/usr/bin/env python3
"""Long prompts and a memory failure in the middle of a request, on the GPU (device machine).

Usage: gpu_long_prompt.py LMGEN CKPT_ROOT [--race] [--no-long]

1. Prompts of random ids on the Qwen2.5-0.5B shape (random bf16 weights written by
   tools/gpu_compare.py), greedy, 8 new tokens, through one `lmgen generate --request -` process
   per dtype (the prefill is chunked automatically to fit the free memory) and through
   transformers' sdpa `generate` on the same ids (CASES): f32 must give the same tokens; bf16
   agreement is reported. Time, and the peak GPU memory as nvidia-smi samples it.
2. With --race: a request that fits is sent, and while it runs a torch process takes most of
   the free GPU memory, so an allocation fails inside the request (not at the preflight). The
   answer must be an error; the hog then frees its memory and a small request must be answered
   within 60 s. If it is not, each thread's kernel stack and wait channel are printed, and a gdb
   backtrace of every thread when gdb exists.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_compare as g  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def smi_used():
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.strip()
    return int(out.splitlines()[0]) if out else -1


class Peak:
    """Samples nvidia-smi's used memory every 50 ms while alive."""

    def __init__(self):
        self.peak, self.stop = 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, smi_used())
            time.sleep(0.05)

    def end(self):
        self.stop = True
        self.t.join()
        return self.peak


class Lmgen:
    def __init__(self, binary, model, dtype, err):
        env = dict(os.environ, LMGEN_LOG="debug")
        self.model = model
        self.p = subprocess.Popen([binary, "generate", "--request", "-", "--device", "cuda", "--dtype", dtype],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env)

    def send(self, ids, new=8):
        gc = {"do_sample": False, "max_new_tokens": new, "min_new_tokens": new}
        self.p.stdin.write(json.dumps({"model": self.model, "input_ids": ids, "generation_config": gc}) + "\n")
        self.p.stdin.flush()

    def answer(self, timeout):
        box = {}
        t = threading.Thread(target=lambda: box.update(line=self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return box.get("line")

    def close(self):
        self.p.stdin.close()
        return self.p.wait(timeout=60)


def dump_stacks(pid):
    print(f"== process {pid} did not answer: thread states", flush=True)
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm = open(f"{base}/comm").read().strip()
            wchan = open(f"{base}/wchan").read().strip()
            state = open(f"{base}/stat").read().split()[2]
            stack = open(f"{base}/stack").read().strip().replace("\n", " | ")
        except OSError as e:
            comm, wchan, state, stack = "?", "?", "?", str(e)
        print(f"  thread {tid} {comm} state {state} wchan {wchan}: {stack[:400]}", flush=True)
    gdb = subprocess.run(["bash", "-c", "command -v gdb"], capture_output=True, text=True).stdout.strip()
    if gdb:
        out = subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt 30"],
                             capture_output=True, text=True, timeout=120)
        print(out.stdout[-20000:], flush=True)
    else:
        print("  (no gdb on this machine)", flush=True)


# (dtype, prompt length, compared with transformers): transformers' f32 sdpa takes the math path
# and materialises the whole score matrix (32k tokens: 60 GB a layer, more than the GPU), so the
# f32 comparison is at 16k tokens and the 32k f32 prompt runs in lmgen alone.
CASES = [("f32", 32752, False), ("f32", 16384, True), ("bf16", 32752, True)]


def long_prompt(args, ckpt, ids):
    for dtype in ("f32", "bf16"):
        torch_dtype = torch.float32 if dtype == "f32" else torch.bfloat16
        err = open(os.path.join(g.OUT, f"long_prompt_{dtype}_stderr.txt"), "w")
        lm = Lmgen(args.lmgen, ckpt, dtype, err)
        lm.send([[1, 2, 3, 4]], new=2)  # warm-up: module loading
        lm.answer(300)
        got = {}
        for _, n, _ in [c for c in CASES if c[0] == dtype]:
            prompt = ids[:n]
            torch.cuda.synchronize()
            base = smi_used()
            peak = Peak()
            t = time.time()
            lm.send([prompt])
            line = lm.answer(600)
            took = time.time() - t
            used = peak.end() - base
            answer = json.loads(line) if line else {}
            got[n] = answer.get("sequences", [[None]])[0][n:]
            print(f"lmgen {dtype}: {n}-token prompt in {took:.1f}s, peak GPU memory above idle {used} MiB, "
                  f"new tokens {got[n]}" + ("" if "sequences" in answer else f", answer {str(answer)[:400]}"),
                  flush=True)
        lm.close()
        model = None
        for _, n, compare in [c for c in CASES if c[0] == dtype]:
            if not compare:
                continue
            if model is None:
                model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch_dtype,
                                                             attn_implementation="sdpa").cuda()
            x = torch.tensor([ids[:n]], device="cuda")
            torch.cuda.reset_peak_memory_stats()
            t = time.time()
            with torch.no_grad():
                out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=8,
                                     min_new_tokens=8, pad_token_id=0)
            torch.cuda.synchronize()
            took = time.time() - t
            want = out[0, n:].tolist()
            print(f"transformers {dtype}: {n}-token prompt in {took:.1f}s, peak allocated "
                  f"{torch.cuda.max_memory_allocated() >> 20} MiB, new tokens {want}; "
                  f"{'SAME' if got.get(n) == want else 'DIFFERENT'}", flush=True)
            del out
        del model
        torch.cuda.empty_cache()


def race(args, ckpt):
    err = open(os.path.join(g.OUT, "race_stderr.txt"), "w")
    lm = Lmgen(args.lmgen, ckpt, "bf16", err)
    lm.send([[1, 2, 3, 4]], new=2)
    print("warm-up:", (lm.answer(300) or "")[:100], flush=True)
    # A batch whose prefill and KV take tens of GiB: it passes the preflight on an idle GPU.
    batch = [[(7 * i + j) % 1000 for j in range(4096)] for i in range(48)]
    outcome = "no failure provoked"
    for delay in (0.3, 0.1, 0.6, 1.0):
        lm.send(batch, new=64)
        time.sleep(delay)
        free, _ = torch.cuda.mem_get_info()
        hog = None
        try:
            hog = torch.empty(max(free - (256 << 20), 0), dtype=torch.uint8, device="cuda")
        except RuntimeError as e:
            print(f"hog failed: {e}", flush=True)
        line = lm.answer(300)
        print(f"delay {delay}s: hog {0 if hog is None else hog.numel() >> 30} GiB; answer "
              f"{(line or 'NONE')[:300].strip()}", flush=True)
        del hog
        torch.cuda.empty_cache()
        if line and "sequences" not in line:
            outcome = "failed mid-request"
            break
    t = time.time()
    lm.send([[1, 2, 3, 4]], new=2)
    line = lm.answer(60)
    if line is None:
        print(f"after '{outcome}': the small request was NOT answered in 60 s (stall)", flush=True)
        dump_stacks(lm.p.pid)
        lm.p.kill()
    else:
        print(f"after '{outcome}': small request answered in {time.time() - t:.1f}s: {line[:200].strip()}",
              flush=True)
        print(f"exit {lm.close()}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lmgen")
    ap.add_argument("root")
    ap.add_argument("--race", action="store_true")
    ap.add_argument("--no-long", action="store_true")
    args = ap.parse_args()
    _, ckpt = g.checkpoint("qwen2.5-0.5b", args.root)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join("crates/lmgen/tests/fixtures/golden/models/qwen2", f)
        if os.path.exists(src):
            subprocess.run(["cp", src, ckpt])
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 151000, (max(n for _, n, _ in CASES),), generator=gen).tolist()
    if not args.no_long:
        long_prompt(args, ckpt, ids)
    if args.race:
        race(args, ckpt)


if __name__ == "__main__":
    main()
