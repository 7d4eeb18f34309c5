"""Renders real chat templates of the golden-arch families with transformers, as golden tests.

    /work/tfenv/bin/python tools/make_chat_template_goldens.py [TEMPLATES_DIR]

TEMPLATES_DIR holds llama.cpp's `models/templates/*.jinja` (copies of the model repositories'
templates; llama.cpp 0.3.36's vendored copy from the llama-cpp-python sdist was used). The script
copies each template it uses to crates/lmgen/tests/fixtures/chat_templates/real/FAMILY.jinja (only
when TEMPLATES_DIR is given) and writes FAMILY.json next to it: for every case, the conversation,
whether it passes `tools` (the file's top-level `tools`), the extra keywords (special tokens included, as apply_chat_template passes them) and
add_generation_prompt, and what transformers' `render_jinja_template` (what
`apply_chat_template(tokenize=False)` calls) gives: the text, or the message of the exception.
`strftime_now` is pinned to CLOCK (lmgen's tests pin theirs to the same instant).
"""
import copy
import json
import os
import shutil
import sys
from datetime import datetime, timezone

import transformers
from transformers.utils import chat_template_utils as ctu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/lmgen/tests/fixtures/chat_templates/real")
CLOCK = 1785931200  # 2026-08-05 12:00:00 UTC


class PinnedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(CLOCK, tz or timezone.utc).replace(tzinfo=tz)


ctu.datetime = PinnedDatetime

# family -> (llama.cpp template file, special tokens apply_chat_template passes)
FAMILIES = {
    "qwen3": ("Qwen-Qwen3-0.6B.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen3_5": ("Qwen3.5-4B.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen2_5": ("Qwen-Qwen2.5-7B-Instruct.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "llama3_1": ("meta-llama-Llama-3.1-8B-Instruct.jinja",
                 {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "llama3_2": ("meta-llama-Llama-3.2-3B-Instruct.jinja",
                 {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "mistral_small3_2": ("Mistral-Small-3.2-24B-Instruct-2506.jinja", {"bos_token": "<s>", "eos_token": "</s>"}),
    "ministral3_reasoning": ("mistralai-Ministral-3-14B-Reasoning-2512.jinja",
                             {"bos_token": "<s>", "eos_token": "</s>"}),
    "devstral_small": ("unsloth-mistral-Devstral-Small-2507.jinja", {"bos_token": "<s>", "eos_token": "</s>"}),
    "gemma4": ("google-gemma-4-31B-it.jinja", {"bos_token": "<bos>", "eos_token": "<eos>"}),
    "phi3_5_mini": ("microsoft-Phi-3.5-mini-instruct.jinja", {"bos_token": "<s>", "eos_token": "<|endoftext|>"}),
    "smollm3": ("HuggingFaceTB-SmolLM3-3B.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}),
    "lfm2": ("LFM2-8B-A1B.jinja", {"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>"}),
    "lfm2_5": ("LFM2.5-Instruct.jinja", {"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>"}),
    "granite3_3": ("ibm-granite-granite-3.3-2B-Instruct.jinja",
                   {"bos_token": "<|end_of_text|>", "eos_token": "<|end_of_text|>"}),
    "granite4": ("ibm-granite-granite-4.0.jinja", {"bos_token": "<|end_of_text|>", "eos_token": "<|end_of_text|>"}),
    "deepseek_r1_distill_qwen": ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
                                 {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}),
}

# Two tools whose schemas are neither alphabetical nor flat: key order must survive.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "days": {"type": "integer", "description": "Forecast days"},
                "options": {
                    "type": "object",
                    "properties": {"lang": {"type": "string"}, "hourly": {"type": "boolean"}},
                    "required": ["lang"],
                },
                "at": {"type": ["string", "null"]},
            },
            "required": ["location"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Search the documentation; returns the top hits.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for"},
                "filters": {"type": "array", "items": {"type": "string"}},
                "limit": {"type": "integer", "default": 5},
            },
            "required": ["query", "limit"],
        },
    },
}
TOOLS = [WEATHER, SEARCH]

# Mistral's templates want 9-character alphanumeric ids; the others take any string.
CALLS = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call0ABCD", "type": "function",
         "function": {"name": "get_weather", "arguments": {"location": "Paris, France", "options": {"lang": "fr"}}}},
        {"id": "call1EFGH", "type": "function",
         "function": {"name": "search_docs", "arguments": "{\"query\": \"m\\u00e9t\\u00e9o\", \"limit\": 2}"}},
    ],
}
RESULTS = [
    {"role": "tool", "tool_call_id": "call0ABCD", "name": "get_weather", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
    {"role": "tool", "tool_call_id": "call1EFGH", "name": "search_docs", "content": "Météo: see chapter 3."},
]
USER = {"role": "user", "content": "Weather in Paris, and the docs on météo?"}
SYSTEM = {"role": "system", "content": "You are a careful assistant. Answer briefly."}

CASES = [
    ("plain chat", [{"role": "user", "content": "Hello?"}], None, {}, True),
    ("system prompt, multi-turn",
     [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "Name a colour."}], None, {}, True),
    ("final assistant turn without a generation prompt",
     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], None, {}, False),
    ("tools", [USER], TOOLS, {}, True),
    ("tools with a system prompt", [SYSTEM, USER], TOOLS, {}, True),
    ("tool-call round trip: parallel calls, string and object arguments, content null",
     [SYSTEM, USER, CALLS] + RESULTS, TOOLS, {}, True),
    ("tool-call round trip: one call, object arguments, empty content",
     [USER, dict(CALLS, content="", tool_calls=CALLS["tool_calls"][:1]), RESULTS[0]], TOOLS, {}, True),
    ("tool-call round trip: one call, string arguments, empty content",
     [USER, dict(CALLS, content="", tool_calls=CALLS["tool_calls"][1:]), RESULTS[1]], TOOLS, {}, True),
    ("tool-call round trip then a final answer and a new question",
     [USER, CALLS] + RESULTS + [{"role": "assistant", "content": "It is 21 C and clear; see chapter 3."},
                                {"role": "user", "content": "Thanks. Tomorrow?"}], TOOLS, {}, True),
    ("thinking on, earlier reasoning_content",
     [{"role": "user", "content": "2+2?"},
      {"role": "assistant", "reasoning_content": "Add two and two.", "content": "4"},
      {"role": "user", "content": "3+3?"}], None, {"enable_thinking": True}, True),
    ("thinking off", [{"role": "user", "content": "2+2?"}], None, {"enable_thinking": False}, True),
    ("thinking in the assistant content",
     [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nAdd.\n</think>\n\n4"},
      {"role": "user", "content": "And 3+3?"}], None, {}, True),
    ("content as a list of text parts",
     [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
      {"role": "user", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]}],
     None, {}, True),
    ("non-ASCII content", [{"role": "user", "content": "Grüße, 東京 ☃"}], None, {}, True),
    ("conversation starting with the assistant",
     [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "Hi"}], None, {}, True),
    ("two user turns in a row",
     [{"role": "user", "content": "One"}, {"role": "user", "content": "Two"}], None, {}, True),
    ("tool message without a preceding call",
     [{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "call0ABCD", "content": "orphan"}],
     None, {}, True),
    ("no messages", [], None, {}, True),
]


def render(template, messages, tools, kwargs, add):
    try:
        return {"rendered": ctu.render_jinja_template(
            conversations=[copy.deepcopy(messages)], tools=copy.deepcopy(tools), chat_template=template,
            add_generation_prompt=add, **kwargs)[0][0]}
    except Exception as e:  # the template's raise_exception, or a Python error in it
        return {"error": str(e), "error_type": type(e).__name__}


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else None
    os.makedirs(OUT, exist_ok=True)
    for family, (file, special) in FAMILIES.items():
        dest = os.path.join(OUT, family + ".jinja")
        if src:
            shutil.copyfile(os.path.join(src, file), dest)
        template = open(dest, encoding="utf-8").read()
        cases = []
        for name, messages, tools, kwargs, add in CASES:
            kw = dict(special, **kwargs)
            case = {"name": name, "messages": messages, "tools": tools is not None, "kwargs": kw,
                    "add_generation_prompt": add}
            case.update(render(template, messages, tools, kw, add))
            cases.append(case)
        out = {"transformers": transformers.__version__, "clock": CLOCK, "template": family + ".jinja",
               "source": "llama.cpp models/templates/" + file, "tools": TOOLS, "cases": cases}
        with open(os.path.join(OUT, family + ".json"), "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)
            f.write("\n")
        errs = [c["name"] + ": " + c["error"][:60] for c in cases if "error" in c]
        print(f"{family}: {len(cases)} cases, {len(errs)} errors", *errs, sep="\n  ")


if __name__ == "__main__":
    main()
