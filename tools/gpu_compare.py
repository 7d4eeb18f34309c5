#!/usr/bin/env python3
"""lmgen against transformers on the same GPU, the same random-weight checkpoints and the same ids.

Runs on the device machine (torch 2.11 + transformers 5.17 there), in one process tree:

  python3 tools/gpu_compare.py --bench PATH/generate_speed [--shapes qwen2.5-0.5b,llama-3.2-1b,llama-3.1-8b]
      (or qwen3-30b-a3b-4l, qwen3-dense-a3b-4l, qwen3.5-27b-4l, qwen3.5-27b-attn-4l: SHAPES below)
      [--hf eager,static,batch] [--batches 8,32,64] [--prompt 128] [--new 128] [--prefill 512] [--reps 3]

For each shape it writes a bf16 checkpoint of random weights with transformers (`from_config`, seed 0,
`save_pretrained`), draws the token ids once (ids.json) and times, on those ids:
  - transformers eager `generate` (sdpa): batch-1 decode, time to first token on the long prompt,
    and batch B throughput;
  - transformers static cache + torch.compile (`cache_implementation="static"`, which compiles the
    decode step; warmed up at the same lengths so nothing recompiles while timed): batch-1 decode;
  - transformers `generate_batch` (continuous batching) at each B;
  - lmgen (crates/lmgen/benches/generate_speed.rs, built by tools/build_cuda.sh) with the same
    definitions: decode tok/s = (N-1)/(t_last - t_first) from a streamer's timestamps; throughput =
    B*N / wall time of the whole call, prefill included; TTFT = a 1-token generate on the long prompt.
Peak GPU memory: NVML's per-process used memory (CUDA context, cuBLAS workspace, caches included),
sampled every 10 ms, the same method for every engine. % of bandwidth bound at batch 1:
bytes read per token (weights + KV cache) x tok/s / the device-to-device copy rate measured here
(bytes read + written). Prints a table last and writes $OUT/gpu_compare.json after every step.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen2Config
from transformers.generation.streamers import BaseStreamer

transformers.logging.set_verbosity_error()
OUT = os.environ.get("OUT", ".")
SHAPES = {
    "qwen2.5-0.5b": lambda: Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
        max_position_embeddings=32768),
    "llama-3.2-1b": lambda: LlamaConfig(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=5e5,
        max_position_embeddings=131072),
    "llama-3.2-3b": lambda: LlamaConfig(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=5e5,
        max_position_embeddings=131072),
    "llama-3.1-8b": lambda: LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=5e5,
        max_position_embeddings=131072),
    # Qwen3-4B (shared/notes/real-configs): head_dim 128 with 32 heads over a 2560-wide model.
    "qwen3-4b": lambda: AutoConfig.for_model(
        "qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
        max_position_embeddings=40960, rms_norm_eps=1e-6),
    # Qwen3-30B-A3B (shared/notes/real-configs) cut to 4 layers, and a dense Qwen3 of the same
    # active parameters: the 8 routed experts' 3 * 2048 * 768 each as one 6144-wide MLP.
    "qwen3-30b-a3b-4l": lambda: AutoConfig.for_model(
        "qwen3_moe", hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
        num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1,
        mlp_only_layers=[], num_hidden_layers=4, num_attention_heads=32, num_key_value_heads=4,
        head_dim=128, vocab_size=151936, tie_word_embeddings=False, rope_theta=1e6,
        max_position_embeddings=40960, rms_norm_eps=1e-6),
    "qwen3-dense-a3b-4l": lambda: AutoConfig.for_model(
        "qwen3", hidden_size=2048, intermediate_size=6144, num_hidden_layers=4,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False, rope_theta=1e6, max_position_embeddings=40960, rms_norm_eps=1e-6),
    # Qwen3.5-27B's text model cut to 4 layers (3 gated DeltaNet + 1 gated attention, its
    # pattern), and the same with 4 attention layers.
    "qwen3.5-27b-4l": lambda: qwen3_5_text(["linear_attention"] * 3 + ["full_attention"]),
    "qwen3.5-27b-attn-4l": lambda: qwen3_5_text(["full_attention"] * 4),
}


def qwen3_5_text(layer_types):
    rope = {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25}
    return AutoConfig.for_model(
        "qwen3_5_text", hidden_size=5120, intermediate_size=17408, num_hidden_layers=len(layer_types),
        layer_types=layer_types, num_attention_heads=24, num_key_value_heads=4, head_dim=256,
        attn_output_gate=True, linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_num_key_heads=16,
        linear_num_value_heads=48, linear_value_head_dim=128, vocab_size=248320, tie_word_embeddings=False,
        rope_parameters=rope, partial_rotary_factor=0.25, max_position_embeddings=32768, rms_norm_eps=1e-6)


def log(*a):
    print(*a, flush=True)


class PeakMem:
    """Peak NVML used memory of one process (falls back to device used minus a baseline)."""

    def __init__(self, pid):
        import pynvml
        self.nvml, self.pid, self.peak, self.stop = pynvml, pid, 0, False
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.base = pynvml.nvmlDeviceGetMemoryInfo(self.h).used
        self.method = "nvml-process"
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def sample(self):
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.h)
            mine = [p.usedGpuMemory for p in procs if p.pid == self.pid and p.usedGpuMemory]
            if mine:
                return mine[0]
        except self.nvml.NVMLError:
            pass
        self.method = "nvml-device-minus-baseline"
        return self.nvml.nvmlDeviceGetMemoryInfo(self.h).used - self.base

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, self.sample())
            time.sleep(0.01)

    def done(self):
        self.stop = True
        self.t.join()
        return {"peak_gpu_gib": self.peak / 2**30, "peak_method": self.method}


class Clock(BaseStreamer):
    """Times when each step's tokens reach the host (the first put is the prompt)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def sync_time(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, r


def copy_bandwidth():
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    dt, _ = sync_time(lambda: [y.copy_(x) for _ in range(10)])
    del x, y
    torch.cuda.empty_cache()
    return 2 * 2 * 1024**3 * 10 / dt / 1e9  # GB/s, bytes read + written


def gcfg(n, **kw):
    return GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                            pad_token_id=0, **kw)


def hf_decode_b1(model, ids, n, reps, **kw):
    """Median decode tok/s and TTFT at batch 1; also the greedy tokens."""
    rates, ttfts, toks = [], [], None
    for _ in range(reps):
        clock = Clock()
        t0 = time.perf_counter()
        out = model.generate(ids, generation_config=gcfg(n, **kw), streamer=clock)
        tok = clock.times[1:]
        ttfts.append(tok[0] - t0)
        rates.append((len(tok) - 1) / (tok[-1] - tok[0]))
        toks = out[0, ids.shape[1]:].tolist()
    return {"decode_tok_s": sorted(rates)[len(rates) // 2], "ttft_s": sorted(ttfts)[len(ttfts) // 2],
            "tokens": toks}


def run_hf(name, cfg, ckpt, ids, args, res):
    """transformers on `ckpt`; fills res[name]['transformers']."""
    r = res[name].setdefault("transformers", {})
    mem = PeakMem(os.getpid())
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16, device_map="cuda").eval()
    prompts = torch.tensor(ids["prompts"], device="cuda")
    one, long = prompts[:1], torch.tensor([ids["long"]], device="cuda")
    n = args.new
    with torch.no_grad():
        if "eager" in args.hf:
            model.generate(one, generation_config=gcfg(8))
            model.generate(long, generation_config=gcfg(1))
            ttft = sorted(sync_time(lambda: model.generate(long, generation_config=gcfg(1)))[0]
                          for _ in range(args.reps))[args.reps // 2]
            r["eager_prefill"] = {"ttft_s": ttft, "prefill_tok_s": long.shape[1] / ttft}
            r["eager_decode_b1"] = hf_decode_b1(model, one, n, max(1, args.reps - 1))
            log(name, "hf eager", json.dumps({k: v for k, v in r["eager_decode_b1"].items() if k != "tokens"}))
            for b in args.batches:
                wall, out = sync_time(lambda: model.generate(prompts[:b], generation_config=gcfg(n)))
                assert out.shape == (b, args.prompt + n), out.shape
                r[f"eager_batch{b}"] = {"wall_s": wall, "throughput_tok_s": b * n / wall}
                log(name, f"hf eager b{b}", r[f"eager_batch{b}"])
                dump(res)
        if "static" in args.hf and time.time() > args.deadline:
            r["static_error"] = "skipped: time budget of this run spent"
        elif "static" in args.hf:
            try:
                t = time.perf_counter()
                for _ in range(2):  # compile, then capture at these exact lengths
                    model.generate(one, generation_config=gcfg(n, cache_implementation="static"))
                r["static_compile_warmup_s"] = time.perf_counter() - t
                r["static_decode_b1"] = hf_decode_b1(model, one, n, 2, cache_implementation="static")
                log(name, "hf static+compile", r["static_decode_b1"]["decode_tok_s"])
            except Exception as e:  # noqa: BLE001
                r["static_error"] = f"{type(e).__name__}: {e}"[:400]
                log(name, "hf static error", r["static_error"])
            dump(res)
        if "batch" in args.hf and time.time() > args.deadline:
            r["generate_batch_error"] = "skipped: time budget of this run spent"
        elif "batch" in args.hf:
            g = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=-1, pad_token_id=0)  # as gpu_anchor.py
            try:
                model.generate_batch(ids["prompts"][:4], generation_config=g)
                for b in args.batches:
                    wall, out = sync_time(lambda: model.generate_batch(ids["prompts"][:b], generation_config=g))
                    ntok = sum(len(o.generated_tokens) for o in out.values())
                    r[f"generate_batch{b}"] = {"wall_s": wall, "tokens": ntok, "throughput_tok_s": ntok / wall}
                    log(name, f"hf generate_batch b{b}", r[f"generate_batch{b}"])
                    dump(res)
            except Exception as e:  # noqa: BLE001
                r["generate_batch_error"] = f"{type(e).__name__}: {e}"[:400]
                log(name, "hf generate_batch error", r["generate_batch_error"])
    del model
    torch.cuda.empty_cache()
    r.update(mem.done())
    dump(res)


def run_lmgen(name, ckpt, ids_path, args, res):
    cmd = [args.bench, "--model", ckpt, "--device", "cuda", "--dtype", "bf16", "--ids", ids_path,
           "--prompt", str(args.prompt), "--new", str(args.new), "--prefill", str(args.prefill),
           "--batches", ",".join(map(str, [1] + args.batches)), "--reps", str(args.reps)]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = PeakMem(p.pid)
    r = res[name].setdefault("lmgen", {})
    for line in p.stdout:
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = m["metric"] + (str(m["batch"]) if m["metric"] == "batch" else "")
        r[key] = m
        log(name, "lmgen", line.strip()[:300])
        dump(res)
    err = p.stderr.read()
    p.wait()
    r.update(mem.done())
    r["exit"] = p.returncode
    r["wall_s"] = time.perf_counter() - t
    if p.returncode:
        r["stderr"] = err[-1500:]
        log(name, "lmgen FAILED", err[-1500:])
    dump(res)


def checkpoint(name, dev_dir):
    cfg = SHAPES[name]()
    ckpt = os.path.join(dev_dir, name)
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        t = time.perf_counter()
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(ckpt, safe_serialization=True)
        del model
        torch.cuda.empty_cache()
        log(name, f"checkpoint written in {time.perf_counter() - t:.1f}s")
    return cfg, ckpt


def dense(cfg):
    """Whether `cfg` is a dense Llama / Qwen2 / Qwen3 decoder, whose bytes a step reads are known."""
    return isinstance(cfg, (LlamaConfig, Qwen2Config)) or getattr(cfg, "model_type", None) == "qwen3"


def head_dim(cfg):
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def weight_bytes(cfg):
    """bf16 bytes read per decode step of a dense Llama/Qwen2/Qwen3 (None for the other shapes)."""
    if not dense(cfg):
        return None
    h, i, l, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    d = head_dim(cfg)
    q = cfg.num_attention_heads * d
    kv = cfg.num_key_value_heads * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    bias = (q + 2 * kv) if isinstance(cfg, Qwen2Config) else 0
    qk_norm = 2 * d if getattr(cfg, "model_type", None) == "qwen3" else 0
    return 2 * (l * (per_layer + bias + qk_norm) + h + v * h)  # lm_head read every token; the embedding gather is not


def kv_bytes_per_token(cfg):
    if not dense(cfg):
        return None
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim(cfg) * 2


def dump(res):
    with open(os.path.join(OUT, res["env"]["name"] + ".json"), "w") as f:
        json.dump(res, f, indent=1)


def table(res):
    bw = res["env"]["copy_bandwidth_gb_s"]
    rows = ["| shape | engine | decode b1 tok/s | % of BW bound | TTFT-512 ms | prefill-512 tok/s | "
            + " | ".join(f"B={b} tok/s" for b in res["env"]["batches"]) + " | peak GPU GiB |",
            "|---|---|---:|---:|---:|---:|" + "---:|" * len(res["env"]["batches"]) + "---:|"]
    for name, r in res.items():
        if name == "env" or "checkpoint_error" in r:
            continue
        kv = kv_bytes_per_token(SHAPES[name]())
        wb = r["weight_bytes"] + kv * (res["env"]["prompt"] + res["env"]["new"] / 2) if kv else None
        pct = lambda x: f"{100 * wb * x / (bw * 1e9):.1f}" if x and wb else "-"  # noqa: E731
        f = lambda x, fmt="{:.1f}": fmt.format(x) if isinstance(x, (int, float)) else "-"  # noqa: E731
        hf, lm = r.get("transformers", {}), r.get("lmgen", {})
        g = lambda d, *ks: (d.get(ks[0], {}) or {}).get(ks[1]) if len(ks) == 2 else None  # noqa: E731
        def row(engine, dec, ttft, batches, peak):
            pre = 512 / ttft if ttft else None
            return (f"| {name} | {engine} | {f(dec)} | {pct(dec)} | {f(ttft * 1e3 if ttft else None)} | {f(pre, '{:.0f}')} | "
                    + " | ".join(f(x, "{:.0f}") for x in batches) + f" | {f(peak, '{:.2f}')} |")
        bs = res["env"]["batches"]
        rows.append(row("transformers eager", g(hf, "eager_decode_b1", "decode_tok_s"), g(hf, "eager_prefill", "ttft_s"),
                        [g(hf, f"eager_batch{b}", "throughput_tok_s") for b in bs], hf.get("peak_gpu_gib")))
        rows.append(row("transformers static+compile", g(hf, "static_decode_b1", "decode_tok_s"), None, [None] * len(bs), None))
        rows.append(row("transformers generate_batch", None, None,
                        [g(hf, f"generate_batch{b}", "throughput_tok_s") for b in bs], None))
        rows.append(row("lmgen", g(lm, "decode_b1", "decode_tok_s"), g(lm, "prefill", "ttft_s"),
                        [g(lm, f"batch{b}", "throughput_tok_s") for b in bs], lm.get("peak_gpu_gib")))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="the generate_speed binary built with --features cuda")
    ap.add_argument("--shapes", default="qwen2.5-0.5b,llama-3.2-1b,llama-3.1-8b")
    ap.add_argument("--hf", default="eager,static,batch", help="transformers runs: eager,static,batch (empty: none)")
    ap.add_argument("--batches", default="8,32,64")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/lmgen-ckpt")
    ap.add_argument("--name", default="gpu_compare", help="$OUT/NAME.json and NAME.md")
    ap.add_argument("--drop-checkpoints", action="store_true", help="delete each checkpoint once timed (disk)")
    ap.add_argument("--budget", type=float, default=540, help="seconds; later transformers phases are skipped past it")
    args = ap.parse_args()
    args.deadline = time.time() + args.budget
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.hf = set(filter(None, args.hf.split(",")))
    env = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__, "batches": args.batches, "prompt": args.prompt,
           "new": args.new, "prefill": args.prefill, "name": args.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        env["clocks"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.mem,clocks.max.sm",
                                        "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    env["copy_bandwidth_gb_s"] = copy_bandwidth()
    res = {"env": env}
    log(json.dumps(env))
    for name in args.shapes.split(","):
        try:
            cfg, ckpt = checkpoint(name, args.dir)
        except Exception as e:  # noqa: BLE001 -- one shape transformers cannot build skips only itself
            res[name] = {"checkpoint_error": f"{type(e).__name__}: {e}"[:400]}
            log(name, "checkpoint error", res[name]["checkpoint_error"])
            dump(res)
            continue
        res[name] = {"weight_bytes": weight_bytes(cfg), "kv_bytes_per_token": kv_bytes_per_token(cfg)}
        g = torch.Generator().manual_seed(1)
        ids = {"prompts": torch.randint(0, cfg.vocab_size, (max(args.batches + [1]), args.prompt), generator=g).tolist(),
               "long": torch.randint(0, cfg.vocab_size, (args.prefill,), generator=g).tolist()}
        ids_path = os.path.join(ckpt, "ids.json")
        with open(ids_path, "w") as f:
            json.dump(ids, f)
        run_lmgen(name, ckpt, ids_path, args, res)
        if args.hf:
            try:
                run_hf(name, cfg, ckpt, ids, args, res)
            except Exception as e:  # noqa: BLE001 -- the other shapes still run
                res[name].setdefault("transformers", {})["error"] = f"{type(e).__name__}: {e}"[:400]
                log(name, "transformers error", res[name]["transformers"]["error"])
                torch.cuda.empty_cache()
        if args.drop_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
        lm = res[name]["lmgen"].get("tokens", {}).get("generated")
        hf = res[name].get("transformers", {}).get("eager_decode_b1", {}).get("tokens")
        if lm and hf:
            same = next((i for i, (a, b) in enumerate(zip(lm, hf)) if a != b), min(len(lm), len(hf)))
            res[name]["greedy_agreement"] = f"first {same} of {min(len(lm), len(hf))} greedy tokens identical (bf16)"
            log(name, res[name]["greedy_agreement"])
        dump(res)
        log(table(res))
    table_md = table(res)
    with open(os.path.join(OUT, args.name + ".md"), "w") as f:
        f.write(table_md + "\n")
    log(table_md)


if __name__ == "__main__":
    sys.exit(main())
