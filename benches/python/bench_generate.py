"""One script timed with `import transformers` or `import lmgen` (argv[1]): greedy generate() on
the same checkpoint, the same prompt token ids, a fixed number of new tokens (EOS ignored through
min_new_tokens), batch 1 and batch 16; median of --runs timed runs after one warm-up.

    python benches/python/bench_generate.py transformers|lmgen [--model models/tiny-austen]
        [--new-tokens 64] [--runs 5] [--device cpu]
"""

import argparse
import importlib
import json
import statistics
import time

parser = argparse.ArgumentParser()
parser.add_argument("library", choices=["transformers", "lmgen"])
parser.add_argument("--model", default="models/tiny-austen")
parser.add_argument("--new-tokens", type=int, default=64)
parser.add_argument("--runs", type=int, default=5)
parser.add_argument("--device", default="cpu")
parser.add_argument("--batches", default="1,16")
args = parser.parse_args()

lib = importlib.import_module(args.library)
try:
    import torch

    return_tensors = "pt"
except ImportError:
    torch = None
    return_tensors = "np"

if args.library == "transformers":
    model = lib.AutoModelForCausalLM.from_pretrained(args.model, dtype="float32").to(args.device)
else:
    model = lib.AutoModelForCausalLM.from_pretrained(args.model, dtype="float32",
                                                     device=args.device)
tokenizer = lib.AutoTokenizer.from_pretrained(args.model, padding_side="left")
prompt = "It is a truth universally acknowledged, that a single man in possession of a good fortune"

for batch in [int(b) for b in args.batches.split(",")]:
    inputs = tokenizer([prompt] * batch, return_tensors=return_tensors)
    if return_tensors == "pt":
        inputs = inputs.to(args.device)
    kwargs = dict(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                  pad_token_id=tokenizer.eos_token_id)

    def run():
        if torch is not None and args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(**inputs, **kwargs)
        if torch is not None and args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    if torch is not None:
        with torch.inference_mode():
            run()
            times = [run()[0] for _ in range(args.runs)]
    else:
        run()
        times = [run()[0] for _ in range(args.runs)]
    median = statistics.median(times)
    print(json.dumps({
        "library": args.library, "device": args.device, "batch": batch,
        "new_tokens": args.new_tokens, "median_s": round(median, 4),
        "tokens_per_s": round(batch * args.new_tokens / median, 1),
        "runs_s": [round(t, 4) for t in times],
    }), flush=True)
