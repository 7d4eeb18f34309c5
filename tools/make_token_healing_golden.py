"""Golden cases for `token_healing`, made with transformers itself.

Run from the repository root with transformers 5.17 / torch 2.11:
    python tools/make_token_healing_golden.py crates/lmgen/tests/fixtures/token_healing/cases.json

Each case runs `model.generate(input_ids, attention_mask=..., token_healing=True, tokenizer=tok,
**generation_config)` on a golden checkpoint (crates/lmgen/tests/fixtures/golden/models, float32,
CPU, sdpa) and records what `GenerationMixin.heal_tokens` returned (wrapped to capture it) and the
sequences, or the exception transformers raised:

  {"name", "model", "tokenizer_kwargs": {"pad_token"?: str}, "prompts",
   "input_ids", "attention_mask", "generation_config",
   "tokenizer": false?,                 # generate() gets no tokenizer
   "expected": {"healed_input_ids", "sequences"} | "error": "Type: message",
   "lmgen_refuses"?: why}               # transformers runs it, lmgen refuses (see the test)

`tokenizer_kwargs` are passed to `AutoTokenizer.from_pretrained` (what a `tokenizer_config.json`
key would set): gpt2 and llama3 have no pad token of their own, and healing pads the re-tokenized
prompts, so those cases give them one. `input_ids` are the prompts tokenized and left-padded with
that pad token. The model's own generation_config.json applies (greedy on these checkpoints).
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.utils import GenerationMixin

ROOT = "crates/lmgen/tests/fixtures/golden/models"

HEALED = []
_heal = GenerationMixin.heal_tokens


def recording_heal(self, input_ids, tokenizer=None):
    out = _heal(self, input_ids, tokenizer)
    HEALED.append(out.tolist())
    return out


GenerationMixin.heal_tokens = recording_heal

URL = "An example of a url is http://www."
HTTPS = "The link is https:"
BO = "I read a bo"

# (name, model, tokenizer kwargs, prompts, generation overrides, extra)
CASES = [
    # gemma2: sentencepiece-style vocabulary ('▁'), BOS added, left padding, `unk_token` set:
    # " " converts to <unk>, so spaces in tail tokens become '<' (the first character of "<unk>").
    ("gemma2_tail_has_extensions", "gemma2", {}, [BO], {}, {}),
    ("gemma2_tail_without_extensions", "gemma2", {}, [HTTPS], {}, {}),
    ("gemma2_url", "gemma2", {}, [URL], {}, {}),
    ("gemma2_space_tail", "gemma2", {}, ["I read a"], {}, {}),
    ("gemma2_http", "gemma2", {}, ["http"], {}, {}),
    ("gemma2_single_token", "gemma2", {}, ["h"], {}, {}),
    ("gemma2_trailing_space", "gemma2", {}, ["Hello world "], {}, {}),
    ("gemma2_batch", "gemma2", {}, [BO, HTTPS], {}, {}),
    ("gemma2_batch_http", "gemma2", {}, ["http", URL], {}, {}),
    ("gemma2_beams", "gemma2", {}, [BO], {"num_beams": 2, "num_return_sequences": 2}, {}),
    # llama3: byte-level BPE ('Ġ'), BOS added, right padding (PreTrainedTokenizerFast), no unk:
    # " " converts to None, so tails keep their spaces. Pad = EOS.
    ("llama3_tail_has_extensions", "llama3", {"pad_token": "<|eot_id|>"}, [BO], {}, {}),
    ("llama3_url", "llama3", {"pad_token": "<|eot_id|>"}, [URL], {}, {}),
    ("llama3_tail_without_extensions", "llama3", {"pad_token": "<|eot_id|>"}, [HTTPS], {}, {}),
    ("llama3_http", "llama3", {"pad_token": "<|eot_id|>"}, ["http"], {}, {}),
    ("llama3_single_token", "llama3", {"pad_token": "<|eot_id|>"}, ["h"], {}, {}),
    ("llama3_trailing_space", "llama3", {"pad_token": "<|eot_id|>"}, ["Hello world "], {}, {}),
    ("llama3_batch", "llama3", {"pad_token": "<|eot_id|>"}, [BO, HTTPS], {}, {}),
    ("llama3_batch_reversed", "llama3", {"pad_token": "<|eot_id|>"}, [HTTPS, BO], {}, {}),
    ("llama3_beams_http", "llama3", {"pad_token": "<|eot_id|>"}, ["http"],
     {"num_beams": 2, "num_return_sequences": 2}, {}),
    ("llama3_batch_width_changes", "llama3", {"pad_token": "<|eot_id|>"}, [BO + " ", "Hello world  "], {},
     {"lmgen_refuses": "the healed prompts are narrower than the padded input: transformers goes on "
                       "with the unhealed attention mask"}),
    # gpt2: byte-level BPE, no BOS added, BOS = EOS = pad, right padding, no unk.
    ("gpt2_tail_has_extensions", "gpt2", {"pad_token": "<|endoftext|>"}, [BO], {}, {}),
    ("gpt2_url", "gpt2", {"pad_token": "<|endoftext|>"}, [URL], {}, {}),
    ("gpt2_single_token", "gpt2", {"pad_token": "<|endoftext|>"}, ["h"], {}, {}),
    ("gpt2_batch", "gpt2", {"pad_token": "<|endoftext|>"}, [HTTPS, BO], {}, {}),
    # Where transformers raises.
    ("qwen2_no_bos_token", "qwen2", {}, [HTTPS], {"do_sample": False}, {}),
    ("gpt2_no_pad_token", "gpt2", {}, [BO], {}, {}),
    ("gemma2_no_tokenizer", "gemma2", {}, [BO], {}, {"tokenizer": False}),
]


def main(out_path):
    models = {}
    cases = []
    for name, model_name, tok_kwargs, prompts, overrides, extra in CASES:
        if model_name not in models:
            models[model_name] = AutoModelForCausalLM.from_pretrained(
                f"{ROOT}/{model_name}", dtype=torch.float32).eval()
        model = models[model_name]
        tok = AutoTokenizer.from_pretrained(f"{ROOT}/{model_name}", **tok_kwargs)
        if tok.pad_token_id is not None:
            enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
        else:
            enc = tok(prompts, return_tensors="pt")
        gen = {"max_new_tokens": 6, **overrides}
        case = {
            "name": name,
            "model": model_name,
            "tokenizer_kwargs": tok_kwargs,
            "prompts": prompts,
            "input_ids": enc.input_ids.tolist(),
            "attention_mask": enc.attention_mask.tolist(),
            "generation_config": gen,
        }
        with_tokenizer = extra.get("tokenizer", True)
        if not with_tokenizer:
            case["tokenizer"] = False
        HEALED.clear()
        try:
            kwargs = {"tokenizer": tok} if with_tokenizer else {}
            with torch.no_grad():
                out = model.generate(**enc, token_healing=True, **gen, **kwargs)
            case["expected"] = {"healed_input_ids": HEALED[0], "sequences": out.tolist()}
        except Exception as e:  # noqa: BLE001 - the exception is the golden answer
            case["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if "lmgen_refuses" in extra:
            case["lmgen_refuses"] = extra["lmgen_refuses"]
        print(name, case.get("expected", {}).get("healed_input_ids") or case.get("error"), file=sys.stderr)
        cases.append(case)
    with open(out_path, "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]\n")


if __name__ == "__main__":
    main(sys.argv[1])
