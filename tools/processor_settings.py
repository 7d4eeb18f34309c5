# transformers' greedy sequences for processor settings that the golden generate.json does not cover
# (encoder repetition penalty / n-gram blocking on the prompt, InfNanRemove + ForcedBOS, watermarking
# lefthash and selfhash, classifier-free guidance with renormalisation and begin suppression).
# Run from the repository root with torch + transformers (the device machine):
#   OUT=dir python3 tools/processor_settings.py  ->  dir/lp.json
# copied to crates/lmgen/tests/fixtures/processor_settings.json (made with transformers 5.17, torch 2.11, CPU).
import json, os, sys, torch
from transformers import AutoModelForCausalLM, WatermarkingConfig
G = json.load(open("crates/lmgen/tests/fixtures/golden/generate.json"))
CFGS = [
    {"encoder_repetition_penalty": 1.5},
    {"encoder_no_repeat_ngram_size": 2},
    {"remove_invalid_values": True, "forced_bos_token_id": 5, "no_repeat_ngram_size": 3},
    {"watermarking_config": {"bias": 4.0}},
    {"watermarking_config": {"bias": 4.0, "seeding_scheme": "selfhash", "context_width": 2}},
    {"guidance_scale": 3.0, "renormalize_logits": True, "begin_suppress_tokens": [5, 6]},
]
out = []
for c in G:
    if c["name"] != "greedy_batch_left_padded" or c["model"] not in ("llama", "gpt2", "qwen2"):
        continue
    m = AutoModelForCausalLM.from_pretrained("crates/lmgen/tests/fixtures/golden/models/" + c["model"])
    ids = torch.tensor(c["input_ids"]); mask = torch.tensor(c["attention_mask"])
    for i, cfg in enumerate(CFGS):
        kw = dict(cfg)
        if "watermarking_config" in kw:
            kw["watermarking_config"] = WatermarkingConfig(**kw["watermarking_config"])
        rows = (ids, mask) if "guidance_scale" not in cfg else (ids[:1], mask[:1])
        seq = m.generate(rows[0], attention_mask=rows[1], do_sample=False, max_new_tokens=12,
                         pad_token_id=c["generation_config"]["pad_token_id"], **kw)
        out.append({"model": c["model"], "config": cfg, "input_ids": rows[0].tolist(),
                    "attention_mask": rows[1].tolist(), "sequences": seq.tolist()})
os.makedirs(os.environ["OUT"], exist_ok=True)
json.dump(out, open(os.path.join(os.environ["OUT"], "lp.json"), "w"))
print(len(out))
