"""Gemma 2 reference outputs for the decoding modes transformers 5 moved to Hub repos (contrastive search,
DoLa, group/diverse beam search, constrained beam search), made with transformers 4.47.1, the last release
with them built in. The public golden set (`legacy.json`) has no Gemma 2 cases.

Gemma 2 in transformers 4.47 runs eager attention by default (attention soft-capping on), where transformers
5 runs SDPA (soft-capping off): the cases say `attn_implementation: eager`. And 4.47 decodes with a
DynamicCache without the sliding window (see fix_sliding_window_with_dynamic_cache); each case runs with
the window fixed there, and again with the HybridCache that real Gemma 2 checkpoints select.

Three checkpoints: the golden `gemma2` (its config rewritten in the transformers 4 layout that Gemma 2
checkpoints on the Hub use) and two more shapes made here with seeded random weights (deeper, narrower
window; wider heads, grouped-query attention 4:1, no attention soft-capping). Each mode runs with
several settings (diversity penalties 0.5 to 50, contrastive penalty_alpha 0.2 to 0.9, top_k 2 to 8),
with a DynamicCache and with `cache_implementation: "hybrid"` (not for contrastive search, where 4.47
crashes with a HybridCache, and not for batches: 4.47's HybridCache decodes a left-padded row wrongly
from its first step, 3.6 logits away from transformers 5.17 and from 4.47's own DynamicCache on
gemma2-deep, which agree exactly). A setting 4.47 refuses is recorded with its error.

Usage (transformers 4.47.1 and torch on the path):
  python tools/make_golden_legacy_gemma2.py GOLDEN_DIR OUT_DIR
GOLDEN_DIR holds models/gemma2 (crates/lmgen/tests/fixtures/golden); OUT_DIR receives models/gemma2-v4,
models/gemma2-deep, models/gemma2-wide and legacy_gemma2.json.
"""
import argparse
import json
import math
import os
import shutil

import torch
import transformers
from transformers import DynamicCache, Gemma2Config, Gemma2ForCausalLM, GenerationConfig, PreTrainedTokenizerFast
from transformers.models.gemma2 import modeling_gemma2

PROMPTS = ["The quick brown fox", "Autoregressive generation is", "def main():\n    print(",
           "A list of colors: red, blue"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def fix_sliding_window_with_dynamic_cache():
    """4.47's Gemma2DecoderLayer masks the sliding window with `tril(ones_like(mask), -window)`, which assumes
    the query rows start at key 0: right for a prefill, but a decoding step with a DynamicCache (q = 1 row
    against all past keys) then masks nothing, so sliding layers attend to the whole past. Its HybridCache
    path is right (and agrees with transformers 5). This wraps the layer so the window is offset by the
    past length, which makes DynamicCache decoding agree with the HybridCache one (checked in main())."""
    forward = modeling_gemma2.Gemma2DecoderLayer.forward

    def fixed(self, hidden_states, attention_mask=None, *args, **kwargs):
        if not (self.is_sliding and attention_mask is not None and attention_mask.dim() == 4
                and isinstance(kwargs.get("past_key_value"), (DynamicCache, type(None)))):
            return forward(self, hidden_states, attention_mask, *args, **kwargs)
        q, kv = attention_mask.shape[-2:]
        outside = torch.tril(torch.ones_like(attention_mask, dtype=torch.bool), diagonal=kv - q - self.sliding_window)
        attention_mask = torch.where(outside, torch.finfo(hidden_states.dtype).min, attention_mask)
        self.is_sliding = False  # the window is applied: skip 4.47's own masking
        try:
            return forward(self, hidden_states, attention_mask, *args, **kwargs)
        finally:
            self.is_sliding = True

    modeling_gemma2.Gemma2DecoderLayer.forward = fixed


def tolist(t):
    return t.detach().cpu().tolist()


def finite(x):
    """JSON has no infinities: -inf becomes null."""
    if isinstance(x, list):
        return [finite(v) for v in x]
    if math.isinf(x) and x < 0:
        return None
    return round(x, 6)


def public_v4(golden, out):
    """The golden gemma2 with its config in the transformers 4 layout (rope_theta, torch_dtype, no layer_types:
    4.47 makes even layers sliding, which is what layer_types says)."""
    path = os.path.join(out, "models", "gemma2-v4")
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(os.path.join(golden, "models", "gemma2"), path)
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["layer_types"] == ["sliding_attention", "full_attention"]
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    cfg["torch_dtype"] = cfg.pop("dtype")
    for key in ("layer_types", "use_bidirectional_attention"):
        cfg.pop(key)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return path


def new_shape(golden, out, name, seed, **shape):
    path = os.path.join(out, "models", name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    src = os.path.join(golden, "models", "gemma2")
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(src, f), path)
    with open(os.path.join(src, "config.json")) as f:
        public = json.load(f)
    cfg = Gemma2Config(vocab_size=public["vocab_size"], bos_token_id=2, eos_token_id=1, pad_token_id=0,
                       max_position_embeddings=512, initializer_range=0.25, **shape)
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(cfg).eval().float()
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model.save_pretrained(path, safe_serialization=True)
    return path


def tokenizer(path):
    with open(os.path.join(path, "tokenizer_config.json")) as f:
        tc = json.load(f)
    # transformers 4 cannot read the tokenizer_config.json that 5 writes; tokenizer.json is all it needs.
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"),
                                  **{k: tc.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")})
    tok.padding_side = "left"
    return tok


def run(model, tok, prompts, cfg):
    enc = tok(prompts, return_tensors="pt", padding=True, return_token_type_ids=False)
    gen = GenerationConfig.from_dict({**model.generation_config.to_dict(), **cfg})
    with torch.no_grad():
        out = model.generate(**enc, generation_config=gen, return_dict_in_generate=True, output_scores=True)
    case = {"input_ids": tolist(enc["input_ids"]), "attention_mask": tolist(enc["attention_mask"]),
            "prompts": prompts, "generation_config": cfg, "expected": {"sequences": tolist(out.sequences)}}
    if getattr(out, "sequences_scores", None) is not None:
        case["expected"]["sequences_scores"] = finite(tolist(out.sequences_scores))
    return case


def modes(gen_ids):
    n = 20
    return {
        "contrastive_a0.6_k4": ([0], dict(do_sample=False, max_new_tokens=n, penalty_alpha=0.6, top_k=4)),
        "contrastive_a0.2_k2": ([1], dict(do_sample=False, max_new_tokens=n, penalty_alpha=0.2, top_k=2)),
        "contrastive_a0.9_k8": ([3], dict(do_sample=False, max_new_tokens=n, penalty_alpha=0.9, top_k=8)),
        "contrastive_batch": ([0, 2], dict(do_sample=False, max_new_tokens=n, penalty_alpha=0.3, top_k=3)),
        "dola_high": ([0], dict(do_sample=False, max_new_tokens=n, dola_layers="high", repetition_penalty=1.2)),
        "dola_low": ([1], dict(do_sample=False, max_new_tokens=n, dola_layers="low")),
        "group_beam_p0.5": ([0], dict(do_sample=False, max_new_tokens=12, num_beams=6, num_beam_groups=3,
                                      diversity_penalty=0.5, num_return_sequences=3)),
        "group_beam_p1_eos": ([1], dict(do_sample=False, max_new_tokens=12, num_beams=6, num_beam_groups=3,
                                        diversity_penalty=1.0, num_return_sequences=3, eos_token_id=gen_ids[4])),
        "group_beam_p5": ([2], dict(do_sample=False, max_new_tokens=12, num_beams=4, num_beam_groups=2,
                                    diversity_penalty=5.0, num_return_sequences=4)),
        "group_beam_p20": ([3], dict(do_sample=False, max_new_tokens=12, num_beams=4, num_beam_groups=4,
                                     diversity_penalty=20.0, num_return_sequences=4)),
        "group_beam_p50_batch": ([0, 3], dict(do_sample=False, max_new_tokens=10, num_beams=6, num_beam_groups=2,
                                              diversity_penalty=50.0, num_return_sequences=2)),
        "constrained_beam": ([0], dict(do_sample=False, max_new_tokens=12, num_beams=4,
                                       force_words_ids=[[101, 202]])),
        "constrained_beam_disjunctive": ([2], dict(do_sample=False, max_new_tokens=12, num_beams=5,
                                                   force_words_ids=[[[303], [404, 505]]])),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("golden")
    ap.add_argument("out")
    a = ap.parse_args()
    assert transformers.__version__ == "4.47.1", transformers.__version__
    torch.set_num_threads(2)
    paths = {
        "gemma2-v4": public_v4(a.golden, a.out),
        "gemma2-deep": new_shape(a.golden, a.out, "gemma2-deep", 1234, hidden_size=48, intermediate_size=96,
                                 num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                                 sliding_window=4, query_pre_attn_scalar=12, attn_logit_softcapping=50.0,
                                 final_logit_softcapping=30.0),
        "gemma2-wide": new_shape(a.golden, a.out, "gemma2-wide", 4321, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                 sliding_window=6, query_pre_attn_scalar=48, attn_logit_softcapping=None,
                                 final_logit_softcapping=15.0),
    }
    fix_sliding_window_with_dynamic_cache()
    cases = []
    for name, path in paths.items():
        tok = tokenizer(path)
        model = Gemma2ForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        assert model.config._attn_implementation == "eager"  # 4.47's default for Gemma 2: soft-capping on
        greedy = run(model, tok, [PROMPTS[0]], dict(do_sample=False, max_new_tokens=20))
        gen_ids = greedy["expected"]["sequences"][0][-20:]
        for case_name, (prompt_ids, cfg) in modes(gen_ids).items():
            prompts = [PROMPTS[i] for i in prompt_ids]
            by_cache = {}
            for cache in ("dynamic", "hybrid"):
                if cache == "hybrid" and case_name.startswith("contrastive"):
                    continue  # 4.47 crashes there ("'HybridCache' object is not subscriptable")
                if cache == "hybrid" and len(prompts) > 1:
                    continue  # 4.47's HybridCache mis-decodes a left-padded row (see the module docstring)
                run_cfg = cfg if cache == "dynamic" else {**cfg, "cache_implementation": cache}
                try:
                    case = run(model, tok, prompts, run_cfg)
                    case["generation_config"] = cfg
                except Exception as e:  # recorded: lmgen must refuse what 4.47 refuses
                    print(name, case_name, cache, "raises:", type(e).__name__, e)
                    case = {"prompts": prompts, "generation_config": cfg, "error": f"{type(e).__name__}: {e}"}
                case.update(name=f"{case_name}_{cache}", model=name, attn_implementation="eager",
                            transformers_cache=cache)
                by_cache[cache] = case
                cases.append(case)
            if len(by_cache) == 2:
                a, b = (by_cache[c].get("expected", {}) for c in ("dynamic", "hybrid"))
                same = a.get("sequences") == b.get("sequences") and all(
                    abs(x - y) <= 1e-4 for x, y in zip(a.get("sequences_scores", []), b.get("sequences_scores", [])))
                print(name, case_name, "DynamicCache (window fixed) and HybridCache agree" if same else "DIFFER")
    with open(os.path.join(a.out, "legacy_gemma2.json"), "w") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
