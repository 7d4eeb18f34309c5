"""Greedy identity of lmgen and llama.cpp on one random-weight checkpoint: the greedy tokens of
lmgen on the safetensors checkpoint, of lmgen on each GGUF file written from it, and of llama.cpp
(llama-cpp-python) on the same GGUF files. For f32 the three must agree token for token; for a
quantized file lmgen and llama.cpp read the same blocks, so they must agree with each other (the
safetensors run is f32 and may differ from them). Also reports, at the first step, the largest
difference between lmgen's and llama.cpp's logits and the margin between the top two logits.

Usage: python greedy_check.py --lmgen BIN --ckpt DIR --gguf F32.gguf[,Q8_0.gguf,...]
       [--tokens 32] [--prompt-len 16] [--threads 2] [--out FILE.json]
Prompt ids are those of `lmgen bench`, (7 + 31 i) % vocab. Exits non-zero on a mismatch.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np


def lmgen_greedy(binary, ckpt, gguf, prompt, tokens, threads, logits=False):
    """lmgen's greedy continuation (and, with logits, the raw logits of the first step)."""
    cmd = [binary, "generate", "--model", ckpt, "--request", "-"]
    if gguf:
        cmd += ["--gguf-file", os.path.abspath(gguf)]
    req = {"input_ids": [prompt],
           "generation_config": {"max_new_tokens": 1 if logits else tokens, "do_sample": False,
                                 "repetition_penalty": 1.0, "num_beams": 1},
           "return": {"logits": logits}}
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, input=json.dumps(req) + "\n", capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    resp = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in resp:
        sys.exit(f"lmgen: {resp['error']}")
    seq = resp["sequences"][0][len(prompt):]
    if logits:
        return seq, np.array(resp["logits"][0][0], dtype=np.float64)
    return seq


def llama_greedy(gguf, prompt, tokens, threads):
    """llama.cpp's greedy continuation: argmax of the last logits after each eval."""
    from llama_cpp import Llama

    # logits_all: llama-cpp-python keeps logits in `scores` only then (it samples inside llama.cpp
    # otherwise); the last row is the same either way.
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=256, n_batch=256,
                logits_all=True, verbose=False)
    llm.eval(prompt)
    first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    seq = []
    for _ in range(tokens):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        seq.append(tok)
        llm.eval([tok])
    return seq, first


def margin(logits):
    top2 = np.sort(logits)[-2:]
    return float(top2[1] - top2[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmgen", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--gguf", required=True, help="comma-separated GGUF files written from --ckpt")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    vocab = json.load(open(os.path.join(a.ckpt, "config.json")))["vocab_size"]
    prompt = [(7 + 31 * i) % vocab for i in range(a.prompt_len)]
    ref = lmgen_greedy(a.lmgen, a.ckpt, None, prompt, a.tokens, a.threads)
    print(f"lmgen safetensors: {ref}")
    result = {"ckpt": a.ckpt, "prompt": prompt, "tokens": a.tokens, "lmgen_safetensors": ref, "files": []}
    ok = True
    for gguf in a.gguf.split(","):
        lm = lmgen_greedy(a.lmgen, a.ckpt, gguf, prompt, a.tokens, a.threads)
        _, lm_first = lmgen_greedy(a.lmgen, a.ckpt, gguf, prompt, a.tokens, a.threads, logits=True)
        ll, ll_first = llama_greedy(gguf, prompt, a.tokens, a.threads)
        same_engines = lm == ll
        same_as_f32 = lm == ref
        agree = sum(x == y for x, y in zip(lm, ll))
        diff = float(np.max(np.abs(lm_first - ll_first)))
        entry = {"gguf": os.path.basename(gguf), "lmgen_gguf": lm, "llama_cpp": ll,
                 "lmgen_gguf_equals_llama_cpp": same_engines, "lmgen_gguf_equals_safetensors": same_as_f32,
                 "positions_equal": agree, "first_step_max_abs_logit_diff": diff,
                 "first_step_top2_margin_lmgen": margin(lm_first), "first_step_top2_margin_llama_cpp": margin(ll_first),
                 "first_step_logit_scale": float(np.std(ll_first))}
        result["files"].append(entry)
        print(f"{os.path.basename(gguf)}: lmgen GGUF == llama.cpp: {same_engines} ({agree}/{a.tokens}); "
              f"== lmgen safetensors: {same_as_f32}; step-1 max|logit diff| {diff:.3g} "
              f"(logit std {entry['first_step_logit_scale']:.3g}, top-2 margin {margin(ll_first):.3g})")
        if not same_engines:
            print(f"  lmgen:     {lm}\n  llama.cpp: {ll}")
        quantized = not os.path.basename(gguf).endswith("f32.gguf")
        ok &= same_engines and (quantized or same_as_f32)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
