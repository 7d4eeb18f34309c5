#!/usr/bin/env python3
"""The OpenAI server on the GPU under concurrent streaming clients, beside transformers'
`generate_batch` on the same prompts (issue 25). Runs on the device machine (torch +
transformers there), next to tools/gpu_compare.py, whose checkpoints and measures it reuses:

  python3 tools/gpu_serve_bench.py --lmgen PATH/lmgen [--shape qwen2.5-0.5b] [--clients 64]
      [--min-prompt 128] [--max-prompt 2048] [--new 256] [--max-batch-tokens 2048] [--no-hf]

- Checkpoint: gpu_compare's random bf16 weights for the shape, plus a word-level tokenizer over
  its vocabulary (`<i>` is token i), which the server needs to stream text.
- Prompts: `--clients` lengths drawn uniformly in [min, max] (seed 0), token ids drawn uniformly.
- lmgen: `lmgen serve --device cuda --dtype bf16`; every client sends its prompt as token ids to
  /v1/completions at once (greedy, `max_tokens` = `min_tokens` = `--new`, streamed). TTFT = first
  token's chunk - send; ITL = the gaps between a client's chunks; throughput = all generated tokens
  / (last chunk - first send).
- transformers: `generate_batch` (continuous batching, paged cache) on the same ids and lengths,
  greedy, EOS off; throughput the same way (one call, so no per-token latencies).
- Bound at that batch: each step reads the weights once and every running sequence's keys and
  values, (W + sum(context) * kv) / copy bandwidth measured here (bytes read + written), with the
  mean context of the decode (prompt + half the new tokens).
Writes $OUT/serve_bench.json and prints a table.
"""
import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_compare as g  # noqa: E402

OUT = os.environ.get("OUT", ".")


def tokenizer(ckpt, vocab):
    """A word-level tokenizer: token i is `<i>` (the last is `abcdef`); whitespace separates words."""
    path = os.path.join(ckpt, "tokenizer.json")
    if os.path.exists(path):
        return
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = {f"<{i}>": i for i in range(vocab - 1)}
    # The server's stop-string table decodes every token after "abcdef" (transformers'
    # `clean_tokenizer_vocab`), so that word must survive a round trip: it is the last token.
    words["abcdef"] = vocab - 1
    tok = Tokenizer(models.WordLevel(words, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(path)


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def client(port, model, ids, new, start_evt, out):
    start_evt.wait()
    # `logprobs: 0`: a chunk for every token, also for tokens whose text is empty (random weights
    # often repeat such a token, and the server skips deltas without text or logprobs).
    body = json.dumps({"model": model, "prompt": ids, "max_tokens": new, "min_tokens": new,
                       "temperature": 0, "stream": True, "logprobs": 0,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    sent = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        out["error"] = f"{resp.status} {resp.read()[:300]!r}"
        return
    times, tokens = [], None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("error"):
            out["error"] = f"in the stream: {str(chunk['error'])[:300]}"
            return
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if any(c.get("text") or c.get("logprobs") for c in chunk.get("choices", [])):
            times.append(time.perf_counter())
    conn.close()
    out.update(sent=sent, times=times, tokens=tokens)


def run_lmgen(args, ckpt, prompts, res):
    cmd = [args.lmgen, "serve", "--model", ckpt, "--device", "cuda", "--dtype", "bf16", "--port", "0",
           "--kv-cache-gb", str(args.kv_cache_gb), "--max-running", str(args.clients),
           "--max-batch-tokens", str(args.max_batch_tokens), "--served-model-name", "bench"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(OUT, "serve.log"), "w"),
                            text=True)
    try:
        port = None
        t0 = time.time()
        while port is None and time.time() - t0 < 300:
            line = proc.stdout.readline()
            if not line:
                break
            g.log("serve:", line.strip())
            for word in line.replace("/", " ").replace(":", " ").split():
                if word.isdigit() and int(word) > 1024:
                    port = int(word)
        if port is None:
            raise RuntimeError("the server printed no port; see serve.log")
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        # Warm-up: one short request (kernels load, cuBLAS handles).
        warm = {}
        ev = threading.Event()
        ev.set()
        client(port, "bench", prompts[0][:64], 8, ev, warm)
        if "error" in warm:
            raise RuntimeError(warm["error"])
        outs = [{} for _ in prompts]
        ev = threading.Event()
        threads = [threading.Thread(target=client, args=(port, "bench", p, args.new, ev, o))
                   for p, o in zip(prompts, outs)]
        for t in threads:
            t.start()
        ev.set()
        for t in threads:
            t.join()
        errors = [o["error"] for o in outs if "error" in o]
        if errors:
            raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
        first = min(o["sent"] for o in outs)
        last = max(o["times"][-1] for o in outs)
        tokens = sum(o["tokens"] or len(o["times"]) for o in outs)
        ttft = [o["times"][0] - o["sent"] for o in outs]
        itl = [b - a for o in outs for a, b in zip(o["times"], o["times"][1:])]
        res["lmgen"] = {
            "wall_s": last - first, "tokens": tokens, "throughput_tok_s": tokens / (last - first),
            "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
            "itl_p50_s": percentile(itl, 50), "itl_p99_s": percentile(itl, 99),
            "chunks_per_request": statistics.mean(len(o["times"]) for o in outs),
        }
        g.log("lmgen", res["lmgen"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_hf(args, cfg, ckpt, prompts, res):
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16, attn_implementation="sdpa").to("cuda")
    # As gpu_compare.py runs generate_batch: EOS never matches, greedy.
    gen = GenerationConfig(max_new_tokens=args.new, do_sample=False, eos_token_id=-1, pad_token_id=0)
    warm = GenerationConfig(max_new_tokens=8, do_sample=False, eos_token_id=-1, pad_token_id=0)
    model.generate_batch([p[:64] for p in prompts[:4]], generation_config=warm)
    wall, out = g.sync_time(lambda: model.generate_batch(prompts, generation_config=gen))
    tokens = sum(len(r.generated_tokens) for r in out.values())
    res["transformers_generate_batch"] = {"wall_s": wall, "tokens": tokens, "throughput_tok_s": tokens / wall}
    g.log("transformers", res["transformers_generate_batch"])
    del model
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmgen", required=True)
    ap.add_argument("--shape", default="qwen2.5-0.5b")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--min-prompt", type=int, default=128)
    ap.add_argument("--max-prompt", type=int, default=2048)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--max-batch-tokens", type=int, default=2048)
    ap.add_argument("--kv-cache-gb", type=float, default=20.0)
    ap.add_argument("--no-hf", action="store_true")
    args = ap.parse_args()

    cfg, ckpt = g.checkpoint(args.shape, "/tmp/lmgen-ckpt")
    tokenizer(ckpt, cfg.vocab_size)
    rng = random.Random(0)
    lengths = [rng.randint(args.min_prompt, args.max_prompt) for _ in range(args.clients)]
    prompts = [[rng.randrange(cfg.vocab_size) for _ in range(n)] for n in lengths]
    bw = g.copy_bandwidth()
    w, kv = g.weight_bytes(cfg), g.kv_bytes_per_token(cfg)
    context = sum(lengths) + args.clients * args.new / 2
    res = {"shape": args.shape, "clients": args.clients, "prompt_lengths": [min(lengths), max(lengths)],
           "mean_prompt": statistics.mean(lengths), "new": args.new, "copy_gb_s": bw,
           "max_batch_tokens": args.max_batch_tokens}
    if w and kv:
        res["bound_tok_s"] = args.clients * bw * 1e9 / (w + context * kv)
    try:
        run_lmgen(args, ckpt, prompts, res)
    except Exception as e:  # noqa: BLE001 - reported, then transformers still runs
        res["lmgen_error"] = f"{type(e).__name__}: {e}"[:600]
        g.log("lmgen FAILED", res["lmgen_error"])
    if not args.no_hf:
        try:
            run_hf(args, cfg, ckpt, prompts, res)
        except Exception as e:  # noqa: BLE001
            res["hf_error"] = f"{type(e).__name__}: {e}"[:600]
            g.log("transformers FAILED", res["hf_error"])
    with open(os.path.join(OUT, "serve_bench.json"), "w") as f:
        json.dump(res, f, indent=1)
    bound = res.get("bound_tok_s")
    print(f"\n{args.shape}: {args.clients} streaming clients, prompts {min(lengths)}-{max(lengths)} "
          f"(mean {statistics.mean(lengths):.0f}), {args.new} new tokens; copy rate {bw:.0f} GB/s; "
          f"bound at this batch {bound or float('nan'):.0f} tok/s")
    for name in ("lmgen", "transformers_generate_batch"):
        r = res.get(name)
        if not r:
            continue
        line = f"{name:30} {r['throughput_tok_s']:9.1f} tok/s"
        if bound:
            line += f" ({100 * r['throughput_tok_s'] / bound:.1f}% of bound)"
        if "ttft_p50_s" in r:
            line += (f"  TTFT p50 {1e3 * r['ttft_p50_s']:.0f} ms p99 {1e3 * r['ttft_p99_s']:.0f} ms"
                     f"  ITL p50 {1e3 * r['itl_p50_s']:.1f} ms p99 {1e3 * r['itl_p99_s']:.1f} ms")
        print(line)


if __name__ == "__main__":
    main()
