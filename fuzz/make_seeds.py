"""Writes the seed corpora of the fuzz targets (fuzz/corpus/TARGET/) from the repository's fixtures.
Small files are copied; the checkpoints' large files are symbolic links (the fuzzer reads through them).
Usage: python3 fuzz/make_seeds.py   (from the repository root)
"""
import glob
import json
import os
import shutil
import struct

FIX = "crates/lmgen/tests/fixtures"
OUT = "fuzz/corpus"


def target(name):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def link(src, dst):
    os.symlink(os.path.relpath(src, os.path.dirname(dst)), dst)


def safetensors_bytes(tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def main():
    d = target("safetensors")
    link(f"{FIX}/golden/models/llama/model.safetensors", f"{d}/golden-llama")
    seeds = {
        "f32": {"model.embed_tokens.weight": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))},
        "bf16-f16": {"a": ("BF16", [3], b"\x80\x3f" * 3), "b": ("F16", [1, 2], b"\x00\x3c" * 2)},
        "u8-meta": {"x.blocks": ("U8", [2, 16], bytes(range(32)))},
        "empty": {},
    }
    for name, tensors in seeds.items():
        with open(f"{d}/{name}", "wb") as f:
            f.write(safetensors_bytes(tensors, {"format": "pt"} if name == "u8-meta" else None))

    d = target("gguf")
    for name in ("llama-q8_0", "qwen2-q8_0", "qwen3-q8_0"):
        link(f"{FIX}/gguf/{name}.gguf", f"{d}/{name}")

    d = target("config_json")
    configs = sorted(glob.glob(f"{FIX}/golden/models/*/config.json") + glob.glob(f"{FIX}/golden-arch/models/*/config.json")
                     + glob.glob(f"{FIX}/real-configs/*/config.json"))
    for path in configs:
        shutil.copy(path, f"{d}/{path.split('/')[-2]}")

    d = target("generation_config")
    for path in sorted(glob.glob(f"{FIX}/golden/models/*/generation_config.json")):
        shutil.copy(path, f"{d}/{path.split('/')[-2]}")
    modes = {
        "beam": {"max_new_tokens": 4, "num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5, "early_stopping": "never"},
        "sample": {"max_new_tokens": 4, "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.05,
                   "repetition_penalty": 1.2, "no_repeat_ngram_size": 2, "bad_words_ids": [[5], [6, 7]]},
        "contrastive": {"max_new_tokens": 4, "penalty_alpha": 0.6, "top_k": 4},
        "group-beam": {"max_new_tokens": 4, "num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0},
        "constrained": {"max_new_tokens": 6, "num_beams": 3, "force_words_ids": [[10, 11]]},
        "dola": {"max_new_tokens": 4, "dola_layers": "high", "repetition_penalty": 1.2},
        "lookup": {"max_new_tokens": 6, "prompt_lookup_num_tokens": 3, "max_matching_ngram_size": 2},
        "lengths": {"max_length": 10, "min_length": 5, "min_new_tokens": 2, "eos_token_id": [2, 5], "pad_token_id": 0},
        "processors": {"max_new_tokens": 5, "sequence_bias": [[[3], 1.5]], "suppress_tokens": [4],
                       "begin_suppress_tokens": [6], "forced_bos_token_id": 9, "forced_eos_token_id": 2,
                       "exponential_decay_length_penalty": [2, 1.1], "renormalize_logits": True},
        "watermark": {"max_new_tokens": 4, "watermarking_config": {"greenlist_ratio": 0.25, "bias": 2.0}},
    }
    for name, cfg in modes.items():
        with open(f"{d}/{name}", "w") as f:
            json.dump(cfg, f)

    d = target("chat_template")
    conversation = json.dumps({
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": None, "reasoning_content": "Call the tool.",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "enable_thinking": False, "bos_token": "<s>", "eos_token": "</s>",
    }).encode()
    for path in sorted(glob.glob(f"{FIX}/**/*.jinja", recursive=True)):
        if os.path.islink(path):
            continue
        name = path[len(FIX) + 1:].replace("/", "_")
        with open(path, "rb") as f, open(f"{d}/{name}", "wb") as out:
            out.write(f.read() + b"\0" + conversation)

    d = target("tokenizer_json")
    for name in ("gpt2", "llama", "gemma2", "qwen2"):
        link(f"{FIX}/golden/models/{name}/tokenizer.json", f"{d}/{name}")

    d = target("server_request")
    bodies = [
        (0, {"model": "m", "prompt": "Hello", "max_tokens": 3, "temperature": 0}),
        (0, {"model": "m", "prompt": ["a", "b"], "max_tokens": 2, "n": 2, "logprobs": 2, "stop": ["x"], "seed": 1}),
        (1, {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 3, "stream": True}),
        (1, {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
             "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}),
        (1, {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
             "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "tool_choice": "required"}),
        (2, {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}], "system": "Be brief."}),
        (3, {"model": "m", "input": "Hi", "max_output_tokens": 3, "stream": True}),
    ]
    for i, (endpoint, body) in enumerate(bodies):
        with open(f"{d}/{i}", "wb") as f:
            f.write(bytes([endpoint]) + json.dumps(body).encode())

    d = target("jsonl_request")
    # transformers' golden generate() cases of the tiny Llama as `lmgen generate --request` lines, their lengths cut
    # to the fuzz target's work bounds (fuzz/contracts_jsonl.rs); requests name the model "llama" or none.
    bounds = {"max_new_tokens": 6, "max_length": 12, "min_new_tokens": 6, "min_length": 12, "num_assistant_tokens": 6}
    with open(f"{FIX}/golden/generate.json") as f:
        cases = [c for c in json.load(f) if c["model"] == "llama"]
    for i, case in enumerate(cases):
        config = {k: min(v, bounds[k]) if k in bounds else v for k, v in case["generation_config"].items()}
        request = {"input_ids": case["input_ids"], "attention_mask": case["attention_mask"], "generation_config": config}
        if i % 3 == 1:
            request = {"model": "llama", "prompts": case["prompts"], "generation_config": config}
        if case.get("assistant_model"):
            request["assistant_model"] = "llama"
        if "scores" in case["expected"]:
            request["return"] = {"scores": True}
        with open(f"{d}/{case['name']}", "w") as f:
            f.write(json.dumps(request) + "\n")
    hi = {"prompts": ["Hi"], "generation_config": {"max_new_tokens": 3}}
    lines = {
        "return-all": {**hi, "return": {"scores": True, "logits": True, "stream_chunks": True, "hidden_states": True,
                                        "attentions": True}},
        "sample-seed": {"input_ids": [[1, 15, 27]], "seed": 7,
                        "generation_config": {"do_sample": True, "temperature": 0.8, "top_p": 0.9, "max_new_tokens": 4}},
        "json-schema": {**hi, "structured": {"json_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
        "json-object": {**hi, "structured": "json_object"},
        "regex": {**hi, "structured": {"regex": "[a-z]+ [0-9]{2}"}},
        "grammar": {**hi, "structured": {"grammar": 'start: "yes" | "no"'}},
        "beam-scores": {"input_ids": [[1, 15], [1, 27]], "attention_mask": [[1, 1], [1, 1]], "return": {"scores": True},
                        "generation_config": {"num_beams": 2, "num_return_sequences": 2, "max_new_tokens": 3}},
        "left-padded": {"input_ids": [[2, 2, 1, 15], [1, 27, 30, 8]], "attention_mask": [[0, 0, 1, 1], [1, 1, 1, 1]]},
        "encoder-ids": {"encoder_input_ids": [[1, 2]], "decoder_input_ids": [[0]]},
        "features": {"input_features": [[[0.5, 0.25], [0.0, 1.0]]]},
        "two-sources": {"input_ids": [[1]], "prompts": ["x"]},
        "other-model": {"model": "gpt2", "prompts": ["Hi"]},
        "unknown-field": {"prompts": ["Hi"], "return": {"logit": True}},
        "nulls": {"input_ids": [[1, 5]], "attention_mask": None, "generation_config": None, "return": None},
    }
    for name, request in lines.items():
        with open(f"{d}/{name}", "w") as f:
            f.write(json.dumps(request) + "\n")

    d = target("logits_request")
    # transformers' golden processor cases as `lmgen logits --request` lines; the generation-config ones name
    # the golden Llama ("llama").
    with open(f"{FIX}/golden/processors.json") as f:
        cases = json.load(f)
    for case in cases:
        request = {"input_ids": case["input_ids"], "scores": case["scores"]}
        if "processor" in case:
            request["processor"] = {"name": case["processor"], "args": case["args"]}
        else:
            request.update(generation_config=case["generation_config"], prompt_length=case["prompt_length"], model="llama")
        with open(f"{d}/{case['name']}", "w") as f:
            f.write(json.dumps(request) + "\n")
    small = {"input_ids": [[1, 5, 5, 9]], "scores": [[0.5, None, "nan", "inf", "-inf", 2.0, -1.0, 0.0, 3.0, 1.5]]}
    lines = {
        "guidance": {**small, "generation_config": {"guidance_scale": 1.5}, "prompt_length": 2, "model": "llama"},
        "watermark": {**small, "generation_config": {"do_sample": True, "watermarking_config": {"greenlist_ratio": 0.5}},
                      "prompt_length": 2},
        "diversity": {**small, "processor": {"name": "HammingDiversityLogitsProcessor",
                                             "args": {"diversity_penalty": 1.0, "num_beams": 2, "num_beam_groups": 2}}},
        "both": {**small, "processor": {"name": "TemperatureLogitsWarper", "args": {"temperature": 0.5}},
                 "generation_config": {}},
        "no-length": {**small, "generation_config": {"top_k": 3}},
        "ragged": {"input_ids": [[1], [1, 2]], "scores": [[0.0], [1.0]], "processor": {"name": "LogitNormalization"}},
    }
    for name, request in lines.items():
        with open(f"{d}/{name}", "w") as f:
            f.write(json.dumps(request) + "\n")


if __name__ == "__main__":
    main()
