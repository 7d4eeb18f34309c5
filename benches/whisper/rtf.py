#!/usr/bin/env python3
"""Whisper's real-time factor, lmgen beside transformers in one run, on random-weight checkpoints
of the Whisper-tiny and Whisper-base shapes (their real configs, 80 mel bins, 51,865 tokens).

Both decode the same 30-second window (log-mel features of a synthetic signal made by
transformers' WhisperFeatureExtractor) from the same decoder prompt
`<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`, greedy, exactly NEW tokens
(`min_new_tokens` = `max_new_tokens`: random weights would otherwise stop at any point), through
plain `generate()` (transformers' `GenerationMixin.generate`, lmgen's JSON-lines `generate` with
`input_features` and `decoder_input_ids`). The real-time factor is the time to encode and decode
the window over its 30 s of audio (lower is better; 0.1 = ten times faster than real time). lmgen
runs as one `lmgen generate --request -` process: a warm-up request, then REPS timed ones
(request written to the answer read, the model already loaded); transformers likewise after a
warm-up call. Tokens are compared (they must agree in float32).

    python3 benches/whisper/rtf.py --bin target/release/lmgen [--device cpu|cuda] [--dtype f32|bf16]
        [--shapes tiny,base] [--new 64] [--reps 3] [--threads N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = {
    # openai/whisper-tiny and openai/whisper-base config.json, as published.
    "tiny": dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                 decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                 decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048),
}
# The multilingual vocabulary's special tokens (openai/whisper-tiny).
SOT, EN, TRANSCRIBE, NO_TIMESTAMPS, EOT = 50258, 50259, 50359, 50363, 50257


def checkpoint(shape, root):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    path = os.path.join(root, f"whisper-{shape}")
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51865, num_mel_bins=80, max_source_positions=1500,
                           max_target_positions=448, decoder_start_token_id=SOT, eos_token_id=EOT,
                           pad_token_id=EOT, bos_token_id=EOT, begin_suppress_tokens=None,
                           suppress_tokens=None, **SHAPES[shape])
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    # generate() must not add Whisper's suppressions or forced tokens: plain greedy on both sides.
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"decoder_start_token_id": SOT, "eos_token_id": EOT, "pad_token_id": EOT,
                   "bos_token_id": EOT}, f)
    write_tokenizer(path)
    return path


def write_tokenizer(path):
    """A word-level tokenizer.json over the vocabulary size (lmgen loads one with every
    checkpoint; the requests give ids, so its words do not matter)."""
    vocab = {f"t{i}": i for i in range(51865)}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
           "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
           "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}}
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump(tok, f)


def features():
    """Log-mel features `[1, 80, 3000]` of 30 s: a chirp with noise, as transformers computes them."""
    from transformers import WhisperFeatureExtractor

    sr = 16000
    t = np.arange(30 * sr) / sr
    rng = np.random.default_rng(0)
    audio = 0.3 * np.sin(2 * np.pi * (200 + 60 * t) * t) + 0.05 * rng.standard_normal(t.size)
    fe = WhisperFeatureExtractor(feature_size=80)
    return fe(audio.astype(np.float32), sampling_rate=sr, return_tensors="np").input_features


def run_transformers(path, feats, args):
    import torch
    from transformers import GenerationMixin, WhisperForConditionalGeneration

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    device = "cuda" if args.device == "cuda" else "cpu"
    model = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
    x = torch.tensor(feats, dtype=dtype, device=device)
    prompt = torch.tensor([[SOT, EN, TRANSCRIBE, NO_TIMESTAMPS]], device=device)

    def once():
        with torch.no_grad():
            out = GenerationMixin.generate(model, input_features=x, decoder_input_ids=prompt,
                                           do_sample=False, max_new_tokens=args.new,
                                           min_new_tokens=args.new)
        if device == "cuda":
            torch.cuda.synchronize()
        return out[0].tolist()

    once()
    times, tokens = [], None
    for _ in range(args.reps):
        start = time.perf_counter()
        tokens = once()
        times.append(time.perf_counter() - start)
    return min(times), tokens


def run_lmgen(path, feats, args):
    request = {"model": path, "input_features": feats.tolist(),
               "decoder_input_ids": [[SOT, EN, TRANSCRIBE, NO_TIMESTAMPS]],
               "generation_config": {"do_sample": False, "max_new_tokens": args.new,
                                     "min_new_tokens": args.new}}
    line = (json.dumps(request) + "\n").encode()
    cmd = [args.bin, "generate", "--request", "-", "--device", args.device, "--dtype", args.dtype]
    env = dict(os.environ)
    if args.threads:
        env["RAYON_NUM_THREADS"] = str(args.threads)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    times, tokens = [], None
    for i in range(args.reps + 1):
        start = time.perf_counter()
        p.stdin.write(line)
        p.stdin.flush()
        answer = json.loads(p.stdout.readline())
        elapsed = time.perf_counter() - start
        if "error" in answer:
            sys.exit(f"lmgen: {answer['error']['message']}")
        tokens = answer["sequences"][0]
        if i > 0:
            times.append(elapsed)
    p.stdin.close()
    p.wait()
    return min(times), tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--shapes", default="tiny,base")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "lmgen-whisper-rtf"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    feats = features()
    rows = []
    for shape in args.shapes.split(","):
        path = checkpoint(shape, args.root)
        hf_s, hf_tokens = run_transformers(path, feats, args)
        lm_s, lm_tokens = run_lmgen(path, feats, args)
        row = {"shape": f"whisper-{shape}", "device": args.device, "dtype": args.dtype,
               "new_tokens": args.new, "transformers_s": round(hf_s, 4), "lmgen_s": round(lm_s, 4),
               "transformers_rtf": round(hf_s / 30, 5), "lmgen_rtf": round(lm_s / 30, 5),
               "speedup": round(hf_s / lm_s, 2), "same_tokens": hf_tokens == lm_tokens}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
