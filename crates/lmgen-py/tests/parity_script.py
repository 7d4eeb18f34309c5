"""One script, run with `import transformers` or `import lmgen` (argv[1]); prints its answers as
JSON. test_parity.py runs it both ways on the golden checkpoints and compares.

    python parity_script.py transformers|lmgen GOLDEN_DIR
"""

import importlib
import json
import sys

lib = importlib.import_module(sys.argv[1])
golden = sys.argv[2]
# transformers' generate() takes torch tensors; lmgen takes those too, or NumPy arrays.
try:
    import torch  # noqa: F401

    return_tensors = "pt"
except ImportError:
    return_tensors = "np"


def plain(x):
    """Tensors, arrays and tuples of them as lists."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


class BanTokens(lib.LogitsProcessor):
    def __init__(self, ids):
        self.ids = ids

    def __call__(self, input_ids, scores):
        scores[:, self.ids] = -float("inf")
        return scores


results = {}
for name in ["gpt2", "llama", "qwen2", "mistral", "gemma2"]:
    path = f"{golden}/models/{name}"
    tokenizer = lib.AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = lib.AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    r = results[name] = {}
    inputs = tokenizer(["The quick brown fox"], return_tensors=return_tensors)
    ids = model.generate(**inputs, do_sample=False, max_new_tokens=16,
                         pad_token_id=tokenizer.pad_token_id)
    r["greedy"] = plain(ids)
    r["greedy_text"] = tokenizer.batch_decode(ids, skip_special_tokens=True)

    out = model.generate(**inputs, do_sample=False, num_beams=3, num_return_sequences=2,
                         max_new_tokens=8, return_dict_in_generate=True, output_scores=True,
                         pad_token_id=tokenizer.pad_token_id)
    r["beam"] = plain(out.sequences)
    r["beam_scores"] = plain(out.sequences_scores)
    ts = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices,
                                         normalize_logits=False)
    r["beam_transition_scores"] = plain(ts)

    batch = tokenizer(["Hello", "The quick brown fox jumps"], padding=True,
                      return_tensors=return_tensors)
    ids = model.generate(**batch, do_sample=False, max_new_tokens=8, repetition_penalty=1.3,
                         pad_token_id=tokenizer.pad_token_id)
    r["batch_padded"] = plain(ids)

    config = lib.GenerationConfig(max_new_tokens=10, no_repeat_ngram_size=2, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)
    out = model.generate(**inputs, generation_config=config, output_scores=True,
                         return_dict_in_generate=True)
    r["config_object"] = plain(out.sequences)
    ts = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    r["config_object_transition_scores"] = plain(ts)

    ids = model.generate(**inputs, do_sample=False, max_new_tokens=8,
                         logits_processor=lib.LogitsProcessorList([BanTokens([5, 6, 7, 8])]),
                         pad_token_id=tokenizer.pad_token_id)
    r["user_processor"] = plain(ids)

    pipe = lib.pipeline("text-generation", model=model, tokenizer=tokenizer)
    r["pipeline"] = pipe("Hello", do_sample=False, max_new_tokens=6,
                         pad_token_id=tokenizer.pad_token_id)[0]["generated_text"]

print(json.dumps(results))
