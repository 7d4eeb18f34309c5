"""Golden cases for SynthID text watermarking, made with transformers itself.

Run from the repository root with transformers 5.17 / torch 2.11 (CPU, float32):
    python tools/make_synthid_golden.py crates/lmgen/tests/fixtures/synthid

Writes into that folder:

  cases.json
    "tables":     [{"seed", "size", "sum", "head": first 32, "tail": last 32}] of
                  `SynthIDTextWatermarkLogitsProcessor.sampling_table` (torch.randint on MT19937).
    "processor":  [{"name", "config", "vocab", "steps": [{"input_ids", "scores", "processed"}]}]: one
                  processor object called once per step on the given input ids and random scores
                  (its state carries over, as in generate()); `processed` is what it returned,
                  `f32_error` how far that is from what a twin processor returned on the same scores
                  in float64 (transformers' own float32 error).
                  Scores at `-inf` (as `top_k` leaves them) come back as the dtype's lowest value.
                  With several layers, `1 + g - E[g]` cancels for tokens of tiny probability:
                  there float32 is off the float64 answer by up to tenths in log space.
    "generate":   [{"name", "model", "input_ids", "attention_mask", "generation_config",
                  "sequences", "top_scores": [step][row] -> [[id, score]] x TOP}]: `model.generate`
                  with `SynthIDTextWatermarkingConfig(**config)` (greedy or beam search on the golden
                  checkpoints), with the TOP best processed scores (`output_scores`) of each step.
    "detector":   [{"name", "config", "eos_token_id", "input_ids", "g_values",
                  "context_repetition_mask", "eos_token_mask", "posterior"}]: the processor's
                  `compute_g_values`, `compute_context_repetition_mask`, `compute_eos_token_mask`, and
                  `SynthIDTextWatermarkDetector(detector, processor, tokenizer)(input_ids)` with the
                  Bayesian detector in `detector/`.
  detector/   a `BayesianDetectorModel` (depth 4) with seeded random weights, `save_pretrained`.
"""
import json
import os
import sys
from types import SimpleNamespace

import torch
from transformers import (
    AutoModelForCausalLM,
    BayesianDetectorConfig,
    BayesianDetectorModel,
    SynthIDTextWatermarkDetector,
    SynthIDTextWatermarkingConfig,
)
from transformers.generation.logits_process import SynthIDTextWatermarkLogitsProcessor

ROOT = "crates/lmgen/tests/fixtures/golden/models"
TOP = 16
KEYS4 = [654, 400, 836, 123]
KEYS9 = [654, 400, 836, 123, 340, 443, 597, 160, 57]


def f32(x):
    """A float32 as its shortest round-tripping decimal (or a string for infinities)."""
    if x == float("inf") or x == float("-inf"):
        return str(x)
    return float(f"{x:.9g}")


def err(x32, x64):
    """|float32 answer - float64 answer| to 2 digits, rounded up; 0 where both are the lowest value."""
    lowest32, lowest64 = torch.finfo(torch.float32).min, torch.finfo(torch.float64).min
    if x32 == lowest32 and x64 == lowest64:
        return 0
    return float(f"{abs(x32 - x64) * 1.05:.2g}")


def processor(config):
    full = SynthIDTextWatermarkingConfig(**config)
    return full.construct_processor(vocab_size=0, device="cpu")


def tables():
    out = []
    for seed, size in [(0, 65536), (12345, 1000), (2**40 + 7, 4096)]:
        p = processor({"ngram_len": 2, "keys": [1], "sampling_table_seed": seed, "sampling_table_size": size})
        t = p.sampling_table.tolist()
        out.append({"seed": seed, "size": size, "sum": sum(t), "head": t[:32], "tail": t[-32:]})
    return out


# (name, config, vocab, batch, steps, token choice, -inf below rank)
PROCESSOR_CASES = [
    ("ngram2", {"ngram_len": 2, "keys": KEYS4}, 32, 2, 6, "argmax", None),
    ("ngram5_skip_first", {"ngram_len": 5, "keys": KEYS9, "skip_first_ngram_calls": True}, 32, 2, 8, "argmax", None),
    ("ngram5_no_skip", {"ngram_len": 5, "keys": KEYS9}, 32, 1, 7, "argmax", None),
    # Contexts repeat (tokens from {3, 5}) and the history is short: some are watermarked again.
    ("ngram2_repeats_history2", {"ngram_len": 2, "keys": KEYS4, "context_history_size": 2}, 32, 2, 8, "cycle", None),
    ("ngram3_repeats_history1024", {"ngram_len": 3, "keys": KEYS4, "context_history_size": 1024}, 32, 1, 8, "cycle", None),
    ("seed_and_table", {"ngram_len": 2, "keys": [7, 11, 13], "sampling_table_seed": 99, "sampling_table_size": 1000}, 32, 2, 5, "argmax", None),
    ("after_top_k", {"ngram_len": 2, "keys": KEYS4}, 32, 2, 5, "argmax", 6),
    ("debug_mode", {"ngram_len": 2, "keys": KEYS4, "debug_mode": True}, 32, 2, 4, "argmax", None),
]


def processor_cases():
    out = []
    gen = torch.Generator().manual_seed(1234)
    for name, config, vocab, batch, steps, choice, keep in PROCESSOR_CASES:
        p = processor(config)
        p64 = processor(config)  # the same steps on float64 scores: the exact answer's estimate
        input_ids = torch.randint(0, vocab, (batch, 4), generator=gen)
        records = []
        for step in range(steps):
            scores = torch.randn(batch, vocab, generator=gen) * 3
            if keep is not None:
                kth = torch.topk(scores, keep, dim=1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            processed = p(input_ids, scores.clone())
            exact = p64(input_ids, scores.double())
            records.append({
                "input_ids": input_ids.tolist(),
                "scores": [[f32(x) for x in row] for row in scores.tolist()],
                "processed": [[f32(x) for x in row] for row in processed.tolist()],
                "f32_error": [[err(a, b) for a, b in zip(ra, rb)]
                              for ra, rb in zip(processed.tolist(), exact.tolist())],
            })
            if choice == "argmax":
                nxt = processed.argmax(dim=1, keepdim=True)
            else:
                nxt = torch.tensor([[3 if (step + r) % 2 == 0 else 5] for r in range(batch)])
            input_ids = torch.cat([input_ids, nxt], dim=1)
        out.append({"name": name, "config": config, "vocab": vocab, "steps": records})
    return out


# (name, model, prompts (left-padded with pad 0), config, generation overrides)
GENERATE_CASES = [
    ("llama_ngram2_batch", "llama", [[1, 15, 27, 300, 42], [1, 99, 7]], {"ngram_len": 2, "keys": KEYS4}, {}),
    ("llama_ngram5_skip_first", "llama", [[1, 15, 27, 300, 42], [1, 99, 7]],
     {"ngram_len": 5, "keys": KEYS9, "skip_first_ngram_calls": True}, {"max_new_tokens": 10}),
    ("llama_ngram5_no_skip", "llama", [[1, 15, 27, 300, 42]], {"ngram_len": 5, "keys": KEYS9}, {"max_new_tokens": 10}),
    ("llama_ngram2_history2", "llama", [[1, 5, 5, 5], [1, 200, 201, 202, 203, 204]],
     {"ngram_len": 2, "keys": KEYS4, "context_history_size": 2}, {"max_new_tokens": 12}),
    ("gpt2_ngram3_seed", "gpt2", [[10, 20, 30], [40, 50, 60]],
     {"ngram_len": 3, "keys": [5, 6, 7], "sampling_table_seed": 42, "sampling_table_size": 4096}, {}),
    ("llama_beams_ngram3", "llama", [[1, 15, 27, 300, 42]], {"ngram_len": 3, "keys": KEYS4},
     {"num_beams": 2, "num_return_sequences": 2}),
]


def generate_cases():
    out = []
    models = {}
    for name, model_name, prompts, config, overrides in GENERATE_CASES:
        if model_name not in models:
            models[model_name] = AutoModelForCausalLM.from_pretrained(
                f"{ROOT}/{model_name}", dtype=torch.float32).eval()
        model = models[model_name]
        width = max(len(p) for p in prompts)
        input_ids = [[0] * (width - len(p)) + p for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        gen = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0, **overrides}
        with torch.no_grad():
            res = model.generate(
                input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                watermarking_config=SynthIDTextWatermarkingConfig(**config),
                output_scores=True, return_dict_in_generate=True, **gen)
        top = []
        for step in res.scores:
            vals, ids = torch.topk(step, TOP, dim=1)
            top.append([[[i, f32(v)] for i, v in zip(ir, vr)] for ir, vr in zip(ids.tolist(), vals.tolist())])
        out.append({
            "name": name, "model": model_name, "input_ids": input_ids, "attention_mask": mask,
            "watermarking_config": config, "generation_config": gen,
            "sequences": res.sequences.tolist(), "top_scores": top,
        })
        print(name, res.sequences.tolist(), file=sys.stderr)
    return out


def make_detector(path):
    torch.manual_seed(7)
    config = BayesianDetectorConfig(watermarking_depth=4, base_rate=0.5)
    config.set_detector_information(model_name="llama", watermarking_config={"ngram_len": 2, "keys": KEYS4})
    model = BayesianDetectorModel(config).eval()
    with torch.no_grad():
        lik = model.likelihood_model_watermarked
        lik.beta.copy_(-2.5 + 0.5 * torch.randn(1, 1, 4))
        lik.delta.copy_(0.5 * torch.randn(1, 1, 4, 4))
        model.prior.copy_(torch.tensor([0.3]))
    model.save_pretrained(path)
    return model


# (name, config, eos, rows) -- rows of equal length (a tensor).
DETECTOR_CASES = [
    ("ngram2_eos_and_repeats", {"ngram_len": 2, "keys": KEYS4}, 2,
     [[1, 5, 9, 5, 9, 5, 9, 7, 2, 0, 0], [1, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309]]),
    ("ngram3_history2", {"ngram_len": 3, "keys": KEYS4, "context_history_size": 2}, 2,
     [[4, 5, 4, 5, 4, 5, 6, 4, 5, 4, 5, 6]]),
    ("ngram5_keys9", {"ngram_len": 5, "keys": KEYS9}, 2,
     [[1, 15, 27, 300, 42, 8, 9, 10, 11, 2, 12, 13]]),
]


def detector_cases(detector, generated):
    out = []
    cases = list(DETECTOR_CASES)
    # Each watermarked greedy batch scored with its own config (depth 4 only: the detector's).
    for g in generated:
        if len(g["watermarking_config"]["keys"]) == 4:
            cases.append((f"generated_{g['name']}", g["watermarking_config"], 2, g["sequences"]))
    for name, config, eos, rows in cases:
        p = processor(config)
        ids = torch.tensor(rows)
        record = {"name": name, "config": config, "eos_token_id": eos, "input_ids": rows,
                  "g_values": p.compute_g_values(ids).tolist(),
                  "context_repetition_mask": p.compute_context_repetition_mask(ids).int().tolist(),
                  "eos_token_mask": p.compute_eos_token_mask(ids, eos).tolist()}
        if len(config["keys"]) == 4:
            det = SynthIDTextWatermarkDetector(detector, p, SimpleNamespace(eos_token_id=eos))
            with torch.no_grad():
                (posterior,) = det(ids)
            record["posterior"] = [f32(x) for x in posterior.reshape(-1).tolist()]
        out.append(record)
    return out


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    detector = make_detector(os.path.join(out_dir, "detector"))
    generated = generate_cases()
    golden = {
        "tables": tables(),
        "processor": processor_cases(),
        "generate": generated,
        "detector": detector_cases(detector, generated),
    }
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        f.write("{\n" + ",\n".join(
            f'"{k}": [\n' + ",\n".join(json.dumps(c) for c in v) + "\n]" for k, v in golden.items()
        ) + "\n}\n")


if __name__ == "__main__":
    main(sys.argv[1])
