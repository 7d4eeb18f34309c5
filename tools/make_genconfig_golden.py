"""Golden cases for the GenerationConfig fields of issue 19, made with transformers itself.

Run from the repository root with transformers 5.17 / torch 2.11:
    python tools/make_genconfig_golden.py crates/lmgen/tests/fixtures/genconfig
Writes, on the golden checkpoints (crates/lmgen/tests/fixtures/golden/models, float32, CPU):
  prefill_chunk.json  generate() with `prefill_chunk_size` (greedy, beam search, padded batches),
                      plus transformers' answer where it refuses the setting.
  outputs.json        generate() with `output_hidden_states` / `output_attentions`
                      (attn_implementation="eager", as transformers needs for attentions).
  caches.json         generate() with each `cache_implementation` transformers 5.17 accepts without
                      an extra package ("static", "offloaded", "offloaded_static", "sliding_window",
                      "hybrid", ...).
  quantized.json      generate() with `cache_implementation="quantized"`: quanto and HQQ backends,
                      bit widths, axes, group sizes, residual lengths (needs optimum-quanto and hqq,
                      see `quantized_cases`), and transformers' refusals.
  confidence.json     generate() with `is_assistant` and `assistant_confidence_threshold`
                      (transformers' ConfidenceCriteria).
Each case: {"name", "model", "input_ids", "attention_mask", "generation_config",
            "attn_implementation", "expected": {"sequences", "scores"?, "hidden_states"?, "attentions"?}
            | "error": str}
`hidden_states[step][layer]` is `[b, t_step, hidden]`, `attentions[step][layer]` `[b, heads, q, k]`,
as transformers' GenerateDecoderOnlyOutput; -inf scores are null.
"""
import json
import math
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

ROOT = "crates/lmgen/tests/fixtures/golden/models"
MODELS = ["gpt2", "llama", "qwen2", "mistral", "gemma2"]
LONG = "A list of colors: red, blue, green, yellow, purple, orange and then"
SHORT = "The quick brown fox"
MID = "def main():\n    print("


def rounded(x):
    if isinstance(x, list):
        return [rounded(v) for v in x]
    if math.isinf(x) and x < 0:
        return None
    return round(x, 6)


_loaded = {}


def load(name, attn="sdpa"):
    key = (name, attn)
    if key not in _loaded:
        m = AutoModelForCausalLM.from_pretrained(f"{ROOT}/{name}", dtype=torch.float32,
                                                 attn_implementation=attn).eval()
        tok = AutoTokenizer.from_pretrained(f"{ROOT}/{name}")
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        _loaded[key] = (m, tok)
    return _loaded[key]


def run(name, prompts, cfg, *, attn="sdpa", scores=False, outputs=False, case_name, output_scores=None):
    m, tok = load(name, attn)
    enc = tok(prompts, return_tensors="pt", padding=True)
    pad = m.generation_config.pad_token_id
    cfg = {**cfg, "pad_token_id": pad if pad is not None else tok.pad_token_id}
    case = {
        "name": case_name,
        "model": name,
        "input_ids": enc["input_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "generation_config": cfg,
        "attn_implementation": attn,
    }
    torch.manual_seed(0)
    try:
        gen = GenerationConfig.from_dict({**m.generation_config.to_dict(), **cfg})
        with torch.no_grad():
            out = m.generate(**enc, generation_config=gen, return_dict_in_generate=True,
                             output_scores=scores if output_scores is None else output_scores)
    except Exception as e:  # noqa: BLE001 - the refusal is the golden answer
        case["error"] = f"{type(e).__name__}: {e}"
        return case
    exp = {"sequences": out.sequences.tolist()}
    if scores:
        exp["scores"] = rounded(torch.stack(out.scores[:2], 1).tolist())  # the first two steps
    if outputs and out.hidden_states is not None:
        exp["hidden_states"] = [[rounded(h.tolist()) for h in step] for step in out.hidden_states]
    if outputs and out.attentions is not None:
        exp["attentions"] = [[rounded(a.tolist()) for a in step] for step in out.attentions]
    case["expected"] = exp
    return case


def prefill_chunk_cases():
    cases = []
    greedy = dict(do_sample=False, max_new_tokens=10)
    for name in MODELS:
        for chunk in (1, 3, 7, 64):
            cfg = {**greedy, "prefill_chunk_size": chunk}
            cases.append(run(name, [LONG], cfg, scores=chunk == 3, case_name=f"greedy_chunk{chunk}"))
            cases.append(run(name, [LONG, SHORT, MID], cfg, case_name=f"batch_chunk{chunk}"))
        beam = dict(do_sample=False, max_new_tokens=8, num_beams=3, prefill_chunk_size=4)
        cases.append(run(name, [LONG, SHORT], beam, case_name="beam_chunk4"))
    # Refusals: no cache to prefill into, a chunk of 0 tokens.
    for bad, label in ((dict(use_cache=False), "no_cache"), (dict(prefill_chunk_size=0), "zero")):
        cfg = {**greedy, "prefill_chunk_size": 4, **bad}
        cases.append(run("llama", [LONG], cfg, case_name=f"refused_{label}"))
    return cases


def output_cases():
    cases = []
    base = dict(do_sample=False, max_new_tokens=3, output_hidden_states=True, output_attentions=True)
    for name in MODELS:
        cases.append(run(name, [SHORT, MID], base, attn="eager", outputs=True, case_name="eager_batch"))
        cases.append(run(name, [SHORT, MID], base, attn="sdpa", outputs=True, case_name="sdpa_batch"))
        cases.append(run(name, [LONG], {**base, "prefill_chunk_size": 5}, attn="eager", outputs=True,
                         case_name="eager_chunked"))
    # transformers' default attention (sdpa) returns no attention weights: empty tuples per step.
    cases.append(run("llama", [SHORT], base, attn="sdpa", outputs=True, case_name="sdpa_hidden_only"))
    return cases


def cache_cases():
    cases = []
    greedy = dict(do_sample=False, max_new_tokens=10)
    kinds = ["dynamic", "static", "offloaded", "offloaded_static", "sliding_window", "hybrid",
             "hybrid_chunked", "offloaded_hybrid", "offloaded_hybrid_chunked"]
    for name in MODELS:
        for kind in kinds:
            cfg = {**greedy, "cache_implementation": kind}
            cases.append(run(name, [LONG, SHORT, MID], cfg, case_name=f"batch_{kind}"))
        cases.append(run(name, [LONG], {**greedy, "cache_implementation": "static", "max_cache_len": 64},
                         case_name="static_max_cache_len"))
        cases.append(run(name, [LONG, SHORT], dict(do_sample=False, max_new_tokens=8, num_beams=3,
                                                    cache_implementation="static"), case_name="beam_static"))
    cases.append(run("llama", [LONG], {**greedy, "cache_implementation": "compact"}, case_name="refused_unknown"))
    return cases


QUANTIZED = {
    "quanto4": dict(backend="quanto", nbits=4, q_group_size=16, residual_length=4),
    "quanto2_axis_key_last": dict(backend="quanto", nbits=2, axis_key=-1, q_group_size=4, residual_length=3),
    "quanto4_axis_last": dict(backend="quanto", nbits=4, axis_key=-1, axis_value=-1, q_group_size=4,
                              residual_length=6),
    "hqq8_axis1": dict(backend="hqq", nbits=8, axis_key=1, axis_value=1, q_group_size=16, residual_length=5),
    "hqq4": dict(backend="hqq", nbits=4, q_group_size=16, residual_length=4),
    "hqq2_axis1": dict(backend="hqq", nbits=2, axis_key=1, axis_value=1, q_group_size=16, residual_length=2),
    "hqq3": dict(backend="hqq", nbits=3, q_group_size=32, residual_length=7),
}


def stable_new_tokens(case, seeds=16, noise=1e-6):
    """Per row, how many generated tokens stay the same when transformers reruns the case with its weights
    perturbed by `noise` (relative) for each of `seeds` seeds: a 2-4 bit cache turns float32 rounding
    differences into different codes, so tokens past this point depend on rounding, not on semantics."""
    m, _ = load(case["model"])
    gen = GenerationConfig.from_dict({**m.generation_config.to_dict(), **case["generation_config"]})
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    want = case["expected"]["sequences"]
    stable = [len(r) for r in want]
    saved = {k: v.clone() for k, v in m.state_dict().items()}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * noise * p.abs().mean())
            torch.manual_seed(0)
            out = m.generate(input_ids=ids, attention_mask=mask, generation_config=gen).tolist()
            m.load_state_dict(saved)
        for r, (o, w) in enumerate(zip(out, want)):
            n = next((i for i, (x, y) in enumerate(zip(o, w)) if x != y), min(len(o), len(w)))
            stable[r] = min(stable[r], n)
    return [s - ids.shape[1] for s in stable]


def quantized_cases():
    """transformers' QuantizedCache with both backends (optimum-quanto 0.2.7 and hqq 0.2.8 installed
    with --no-deps; quanto builds a C++ extension at first use and needs `ninja` on PATH)."""
    cases = []
    greedy = dict(do_sample=False, max_new_tokens=12, cache_implementation="quantized")
    for name in ("gpt2", "llama", "qwen2"):
        for label, cc in QUANTIZED.items():
            cases.append(run(name, [SHORT, MID], {**greedy, "cache_config": cc}, scores=label == "quanto4",
                             case_name=f"quantized_{label}"))
    # Defaults (quanto, 4 bits, groups of 64, residual 128): gpt2 has 64 key values per token.
    cases.append(run("gpt2", [LONG], greedy, case_name="quantized_defaults"))
    cases.append(run("llama", [SHORT], {**greedy, "do_sample": True, "top_k": 1,
                                        "cache_config": QUANTIZED["quanto4"]}, case_name="quantized_sample_top1"))
    for case in cases:
        if "expected" in case:
            case["stable_new_tokens"] = stable_new_tokens(case)
    for label, cfg in (("refused_quanto8", {**greedy, "cache_config": dict(backend="quanto", nbits=8)}),
                       ("refused_hqq5", {**greedy, "cache_config": dict(backend="hqq", nbits=5)}),
                       ("refused_sliding", {**greedy, "cache_config": QUANTIZED["hqq4"]})):
        cases.append(run("mistral" if label == "refused_sliding" else "llama", [LONG], cfg, case_name=label))
    return cases


def confidence_cases():
    """`is_assistant` with `assistant_confidence_threshold`: transformers adds ConfidenceCriteria, which reads the
    step's processed scores (so `output_scores=True`, as its candidate generator sets; without them it fails)."""
    cases = []
    # Not mistral: with `is_assistant` transformers 5.17 records the cache's past for rollback, and its
    # sliding-window layer then fails once the prompt is longer than the window (a RuntimeError).
    for name in ("gpt2", "llama", "qwen2"):
        # The tiny models' greedy tokens have probabilities of about 0.04 to 0.35.
        for threshold in (0.045, 0.058, 0.073, 0.12):
            cfg = dict(do_sample=False, max_new_tokens=16, is_assistant=True, assistant_confidence_threshold=threshold)
            cases.append(run(name, [MID], cfg, output_scores=True, case_name=f"confidence_{threshold}"))
            cases.append(run(name, [SHORT, MID], cfg, output_scores=True, case_name=f"batch_confidence_{threshold}"))
        cfg = dict(do_sample=False, max_new_tokens=16, is_assistant=True, assistant_confidence_threshold=0.0)
        cases.append(run(name, [MID], cfg, output_scores=True, case_name="confidence_off"))
    cases.append(run("llama", [MID], dict(do_sample=False, max_new_tokens=16, is_assistant=True),
                     output_scores=True, case_name="confidence_default_0.4"))
    return cases


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    import transformers

    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    for file, make in (("prefill_chunk.json", prefill_chunk_cases), ("outputs.json", output_cases),
                       ("caches.json", cache_cases), ("quantized.json", quantized_cases),
                       ("confidence.json", confidence_cases)):
        with open(os.path.join(out_dir, file), "w") as f:
            json.dump({"made_with": meta, "cases": make()}, f, separators=(",", ":"))
        print(file, os.path.getsize(os.path.join(out_dir, file)))


if __name__ == "__main__":
    main(sys.argv[1])
