#!/usr/bin/env python3
"""Golden outputs of transformers on the shipped models, and the draft model's acceptance rate.

    python3 tools/train/golden.py models/tiny-austen models/tiny-austen-draft OUT.json

On CPU in float32 (the bf16 weights widened exactly), as lmgen computes by default:
- `cases`: greedy generate() of each model on a few prompts (the checkpoint's generation config
  with `do_sample: false`, and plain greedy with `repetition_penalty: 1.0`), one left-padded
  batch; prompt ids from `AutoTokenizer`, sequences, the decoded new text, and the smallest
  top-1/top-2 gap of the processed scores over the steps (`min_margin`: a tie would make the
  case fragile: cases under MIN_MARGIN are left out).
- `acceptance`: how well the draft predicts the main model's greedy tokens: per-token agreement
  of the draft's argmax with the main model's greedy continuation; speculative greedy decoding
  with K draft tokens per step (accepted / proposed); and transformers' own assisted generate()
  (`assistant_model=`), its output compared with plain greedy and its matches counted through
  `AssistedCandidateGenerator`.
- `samples`: a few sampled continuations with the checkpoint's sampling defaults (seeded).
"""

import json
import sys
import time
from pathlib import Path

import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "Once upon a time",
    "It is a truth universally acknowledged",
    "Elizabeth looked at him and said",
    "The weather was",
    '"My dear Emma," said',
    "She was",
    "Mr. Darcy",
    "The next morning",
]
# Cases whose top-1/top-2 gap falls below this at some step are left out (listed in `left_out`):
# a near tie could flip with the order of floating-point sums, which no implementation promises.
MIN_MARGIN = 1e-3
NEW_TOKENS = 40
ACCEPT_TOKENS = 100
SPEC_K = 4


def greedy_case(name, model_name, model, tok, prompts, overrides):
    enc = [tok(p).input_ids for p in prompts]
    width = max(map(len, enc))
    pad = model.generation_config.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        return_dict_in_generate=True,
        output_scores=True,
        **overrides,
    )
    scores = torch.stack(out.scores, dim=1)  # [B, steps, vocab]
    top2 = scores.topk(2, dim=-1).values
    gaps = top2[..., 0] - top2[..., 1]
    finite = torch.isfinite(gaps)
    seqs = out.sequences.tolist()
    return {
        "name": name,
        "model": model_name,
        "prompts": prompts,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "generation_config": overrides,
        "sequences": seqs,
        "texts": [tok.decode(s[width:], skip_special_tokens=True) for s in seqs],
        "min_margin": float(gaps[finite].min()) if finite.any() else 0.0,
    }


def acceptance(main, draft, tok):
    agree = total = 0
    accepted = proposed = main_steps = 0
    hf_same = True
    hf_matches, hf_proposed = [], []
    from transformers.generation import candidate_generator as cg

    orig_update = cg.AssistedCandidateGenerator.update_candidate_strategy
    orig_get = cg.AssistedCandidateGenerator.get_candidates

    def update(self, input_ids, scores, num_matches):
        hf_matches.append(int(num_matches))
        return orig_update(self, input_ids, scores, num_matches)

    def get(self, input_ids, *a, **k):
        cand, logits = orig_get(self, input_ids, *a, **k)
        hf_proposed.append(int(cand.shape[1] - input_ids.shape[1]))
        return cand, logits

    cg.AssistedCandidateGenerator.update_candidate_strategy = update
    cg.AssistedCandidateGenerator.get_candidates = get
    times = {"greedy": 0.0, "assisted": 0.0}
    for p in PROMPTS:
        ids = torch.tensor([tok(p).input_ids])
        plain = dict(do_sample=False, repetition_penalty=1.0, max_new_tokens=ACCEPT_TOKENS)
        t = time.time()
        greedy = main.generate(ids, **plain)[0]
        times["greedy"] += time.time() - t
        n = ids.shape[1]
        gen = greedy[n:]
        # Per-token agreement: the draft's argmax after each prefix of the greedy sequence.
        with torch.no_grad():
            d = draft(greedy[None, :-1]).logits[0, n - 1 :].argmax(-1)
        agree += int((d == gen).sum())
        total += len(gen)
        # Speculative greedy decoding with SPEC_K draft tokens per main-model step.
        i = 0
        while i < len(gen):
            k = min(SPEC_K, len(gen) - i)
            proposed += k
            main_steps += 1
            m = int((d[i : i + k] == gen[i : i + k]).cumprod(0).sum())
            # With the greedy prefix fixed, the draft's proposal j equals d[i + j] only while the
            # earlier ones matched; the main model then adds one token of its own.
            accepted += m
            i += m + 1
        t = time.time()
        assisted = main.generate(ids, assistant_model=draft, **plain)[0]
        times["assisted"] += time.time() - t
        hf_same &= assisted.tolist() == greedy.tolist()
    cg.AssistedCandidateGenerator.update_candidate_strategy = orig_update
    cg.AssistedCandidateGenerator.get_candidates = orig_get
    return {
        "prompts": PROMPTS,
        "new_tokens_per_prompt": ACCEPT_TOKENS,
        "greedy_agreement": agree / total,
        "speculative_k": SPEC_K,
        "speculative_acceptance": accepted / proposed,
        "speculative_tokens_per_main_step": total / main_steps,
        "transformers_assisted_same_as_greedy": hf_same,
        "transformers_assisted_matches": sum(hf_matches),
        "transformers_assisted_proposed": sum(hf_proposed),
        "transformers_assisted_acceptance": sum(hf_matches) / max(1, sum(hf_proposed)),
        "cpu_seconds": times,
    }


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main_dir, draft_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(main_dir)
    raw = tokenizers.Tokenizer.from_file(str(main_dir / "tokenizer.json"))
    for p in PROMPTS:
        assert tok(p).input_ids == raw.encode(p).ids, p
    models = {}
    for d in (main_dir, draft_dir):
        models[d.name] = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    main_name, draft_name = main_dir.name, draft_dir.name
    cases = []
    greedy = dict(do_sample=False, max_new_tokens=NEW_TOKENS)
    plain = dict(do_sample=False, repetition_penalty=1.0, max_new_tokens=NEW_TOKENS)
    for i, p in enumerate(PROMPTS):
        cases.append(greedy_case(f"greedy_{i}", main_name, models[main_name], tok, [p], greedy))
        cases.append(greedy_case(f"plain_{i}", main_name, models[main_name], tok, [p], plain))
        cases.append(greedy_case(f"draft_{i}", draft_name, models[draft_name], tok, [p], greedy))
    robust = [c["prompts"][0] for c in cases if c["name"].startswith("greedy_") and c["min_margin"] >= MIN_MARGIN]
    cases.append(greedy_case("batch", main_name, models[main_name], tok, robust[:3], greedy))
    for c in cases:
        print(f"{c['name']:10} margin {c['min_margin']:.5f} {c['texts'][0]!r}", flush=True)
    left_out = {c["name"]: c["min_margin"] for c in cases if c["min_margin"] < MIN_MARGIN}
    cases = [c for c in cases if c["min_margin"] >= MIN_MARGIN]
    print("LEFT OUT (near ties)", left_out, flush=True)
    samples = []
    for i, p in enumerate(PROMPTS[:3]):
        torch.manual_seed(i)
        ids = torch.tensor([tok(p).input_ids])
        s = models[main_name].generate(ids)[0]
        samples.append(p + tok.decode(s[ids.shape[1] :], skip_special_tokens=True))
        print("SAMPLE", repr(samples[-1]), flush=True)
    acc = acceptance(models[main_name], models[draft_name], tok)
    print("ACCEPTANCE", json.dumps(acc), flush=True)
    result = {
        "made_with": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
            "device": "cpu",
            "dtype": "float32",
        },
        "min_margin": MIN_MARGIN,
        "cases": cases,
        "left_out": left_out,
        "acceptance": acc,
        "samples": samples,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
