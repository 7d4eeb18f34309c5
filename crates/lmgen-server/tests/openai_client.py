"""Drives a running lmgen-server with the official `openai` Python client (and `/v1/messages` with
the official `anthropic` client).

Run by tests/openai_client.rs, which starts the servers and passes, in the environment:
LMGEN_BASE_URL (main server), LMGEN_MODEL (served model name), LMGEN_EXPECTED (a JSON file of
greedy completions computed with lmgen's static generate()), and per mode LMGEN_SMALL_URL (a
server with one running and one queued place), LMGEN_SERVER_PID (for the SIGTERM test).

Usage: python openai_client.py functional|shutdown|shutdown_timeout|concurrency|tools|audio
"""

import asyncio
import json
import os
import random
import re
import signal
import sys
import time
import urllib.error
import urllib.request

import anthropic
import openai
from openai import AsyncOpenAI, OpenAI

BASE = os.environ["LMGEN_BASE_URL"]
MODEL = os.environ["LMGEN_MODEL"]
EXPECTED = json.load(open(os.environ["LMGEN_EXPECTED"]))


def client(base=BASE):
    return OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)


def expect_error(status, fn, param=None, code=None):
    try:
        fn()
    except openai.APIStatusError as e:
        assert e.status_code == status, (status, e.status_code, e.body)
        body = e.body if isinstance(e.body, dict) else {}
        if param is not None:
            assert body.get("param") == param, (param, body)
        if code is not None:
            assert body.get("code") == code, (code, body)
        assert "message" in body and body.get("type"), body
        return e
    raise AssertionError(f"expected HTTP {status}, got a success")


def metrics(base=BASE):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def greedy_cases():
    return EXPECTED["completions"]


def test_models(c):
    models = c.models.list()
    assert [m.id for m in models.data] == [MODEL], models
    assert c.models.retrieve(MODEL).id == MODEL


def test_completions(c):
    for case in greedy_cases():
        r = c.completions.create(
            model=MODEL, prompt=case["prompt"], max_tokens=case["max_tokens"], temperature=0
        )
        assert r.object == "text_completion"
        assert r.choices[0].text == case["text"], (r.choices[0].text, case)
        assert r.choices[0].finish_reason == case["finish_reason"], (r, case)
        assert r.usage.prompt_tokens == case["prompt_tokens"], r.usage
        assert r.usage.completion_tokens == case["completion_tokens"], r.usage
        assert r.usage.total_tokens == case["prompt_tokens"] + case["completion_tokens"]
        # Streaming gives the same text, a finish reason on the last chunk, usage when asked.
        stream = c.completions.create(
            model=MODEL,
            prompt=case["prompt"],
            max_tokens=case["max_tokens"],
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
                assert chunk.choices == []
                continue
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        assert text == case["text"], (text, case)
        assert finish == case["finish_reason"]
        assert usage.completion_tokens == case["completion_tokens"]


def test_chat(c):
    case = EXPECTED["chat"]
    r = c.chat.completions.create(
        model=MODEL, messages=case["messages"], max_tokens=case["max_tokens"], temperature=0
    )
    assert r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant"
    assert msg.content == case["text"], (msg.content, case["text"])
    assert r.usage.prompt_tokens == case["prompt_tokens"]
    assert r.choices[0].finish_reason == case["finish_reason"]
    stream = c.chat.completions.create(
        model=MODEL,
        messages=case["messages"],
        max_completion_tokens=case["max_tokens"],
        temperature=0,
        stream=True,
    )
    text, roles, finish = "", [], None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        d = chunk.choices[0].delta
        if d.role:
            roles.append(d.role)
        text += d.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert roles == ["assistant"], roles
    assert text == case["text"]
    assert finish == case["finish_reason"]


def test_n_and_seed(c):
    prompt = greedy_cases()[0]["prompt"]

    def sample(seed, stream=False):
        kw = dict(model=MODEL, prompt=prompt, max_tokens=12, temperature=1.0, n=3, seed=seed)
        if not stream:
            r = c.completions.create(**kw)
            assert sorted(ch.index for ch in r.choices) == [0, 1, 2]
            assert r.usage.completion_tokens > 0
            return [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)]
        texts = ["", "", ""]
        for chunk in c.completions.create(stream=True, **kw):
            for ch in chunk.choices:
                texts[ch.index] += ch.text
        return texts

    a, b = sample(1234), sample(1234)
    assert a == b, (a, b)
    assert sample(1234, stream=True) == a
    assert len(set(a)) > 1, a  # three choices, three independent draws
    assert sample(99) != a
    # Chat with n
    r = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=5, seed=7,
        temperature=0.9,
    )
    assert [ch.index for ch in r.choices] == [0, 1]


def test_stop(c):
    case = max(greedy_cases(), key=lambda x: len(x["text"]))
    text = case["text"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    want = text[: text.index(stop)]
    r = c.completions.create(
        model=MODEL, prompt=case["prompt"], max_tokens=case["max_tokens"], temperature=0, stop=stop
    )
    assert r.choices[0].text == want, (r.choices[0].text, want, stop)
    assert r.choices[0].finish_reason == "stop"
    streamed, finish = "", None
    for chunk in c.completions.create(
        model=MODEL, prompt=case["prompt"], max_tokens=case["max_tokens"], temperature=0,
        stop=[stop, "\u00ff\u00ff never"], stream=True,
    ):
        streamed += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
    assert streamed == want, (streamed, want)
    assert finish == "stop"


def test_logprobs(c):
    case = greedy_cases()[0]
    r = c.completions.create(
        model=MODEL, prompt=case["prompt"], max_tokens=case["max_tokens"], temperature=0, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens == len(lp.token_logprobs)
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(len(t) == 2 for t in lp.top_logprobs)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert abs(max(top.values()) - chosen) < 1e-5  # greedy picks the best token
    # The values are generate()'s: log-softmax of the raw logits.
    assert len(lp.token_logprobs) == len(case["logprobs"])
    for got, want in zip(lp.token_logprobs, case["logprobs"]):
        assert abs(got - want) < 1e-4, (lp.token_logprobs, case["logprobs"])
    r = c.chat.completions.create(
        model=MODEL, messages=EXPECTED["chat"]["messages"], max_tokens=4, temperature=0,
        logprobs=True, top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.bytes is not None
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-5


def test_errors(c):
    p = greedy_cases()[0]["prompt"]
    def comp(prompt=p, **kw):
        return c.completions.create(model=MODEL, prompt=prompt, **kw)

    expect_error(400, lambda: comp(temperature=3), param="temperature")
    expect_error(400, lambda: comp(temperature=-0.5), param="temperature")
    expect_error(400, lambda: comp(top_p=0), param="top_p")
    expect_error(400, lambda: comp(max_tokens=0), param="max_tokens")
    expect_error(400, lambda: comp(n=0), param="n")
    expect_error(400, lambda: comp(stop=["a", "b", "c", "d", "e"]), param="stop")
    expect_error(400, lambda: comp(presence_penalty=5), param="presence_penalty")
    expect_error(400, lambda: comp(frequency_penalty=-5), param="frequency_penalty")
    expect_error(400, lambda: comp(logit_bias={"not-a-token": 1}), param="logit_bias")
    expect_error(400, lambda: comp(logprobs=9), param="logprobs")
    expect_error(400, lambda: comp(extra_body={"top_k": -5}), param="top_k")
    expect_error(400, lambda: comp(extra_body={"min_p": 2}), param="min_p")
    expect_error(400, lambda: comp(extra_body={"repetition_penalty": 0}), param="repetition_penalty")
    expect_error(400, lambda: comp(extra_body={"temperature": "hot"}), param="temperature")
    expect_error(400, lambda: comp(stream_options={"include_usage": True}), param="stream_options")
    expect_error(
        400,
        lambda: c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], top_logprobs=2
        ),
        param="top_logprobs",
    )
    ctx = EXPECTED["context_length"]
    e = expect_error(
        400, lambda: comp(prompt=list(range(3, 3 + ctx + 5))), code="context_length_exceeded"
    )
    assert f"maximum context length is {ctx} tokens" in e.body["message"]
    expect_error(400, lambda: comp(max_tokens=ctx + 10), code="context_length_exceeded", param="max_tokens")
    expect_error(404, lambda: c.completions.create(model="no-such-model", prompt="x"), param="model")
    expect_error(404, lambda: c.models.retrieve("no-such-model"))
    expect_error(413, lambda: comp(prompt="x" * (EXPECTED["max_body_bytes"] + 10)))
    # The processors still run when valid: logit_bias forces a token.
    forced = EXPECTED["forced_token"]
    r = comp(max_tokens=3, temperature=0, logit_bias={str(forced["id"]): 100})
    assert r.choices[0].text == forced["text3"], (r.choices[0].text, forced)
    r = comp(max_tokens=3, temperature=0.5, extra_body={"top_k": 1, "min_p": 0.1, "repetition_penalty": 1.1},
             presence_penalty=0.5, frequency_penalty=0.5, top_p=0.9)
    assert r.usage.completion_tokens >= 1


def test_hf_extras(c):
    """The Hugging Face extras change the output as in generate(): sampling hot with `top_k: 1` or
    `min_p: 1` keeps only the best token (greedy); `repetition_penalty` equals generate()'s."""
    case = greedy_cases()[0]
    for extra in [{"top_k": 1}, {"min_p": 1.0}]:
        for seed in [1, 2]:
            r = c.completions.create(
                model=MODEL, prompt=case["prompt"], max_tokens=case["max_tokens"],
                temperature=1.8, seed=seed, extra_body=extra,
            )
            assert r.choices[0].text == case["text"], (extra, r.choices[0].text, case)
    hot = c.completions.create(
        model=MODEL, prompt=case["prompt"], max_tokens=case["max_tokens"], temperature=1.8, seed=1,
    )
    assert hot.choices[0].text != case["text"], "sampling hot should differ from greedy"
    rep = EXPECTED["repetition_penalty"]
    assert rep["text"] != rep["greedy_text"], rep  # the penalty matters on this prompt
    r = c.completions.create(
        model=MODEL, prompt=rep["prompt"], max_tokens=rep["max_tokens"], temperature=0,
        extra_body={"repetition_penalty": 1.5},
    )
    assert r.choices[0].text == rep["text"], (r.choices[0].text, rep)


REPLY_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no", "maybe"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "words": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2},
    },
    "required": ["answer", "count", "words"],
    "additionalProperties": False,
    # Compact JSON: the tiny random model would otherwise spend its tokens on whitespace.
    "x-guidance": {"whitespace_flexible": False},
}


def check_reply(text):
    v = json.loads(text)
    assert set(v) == {"answer", "count", "words"}, v
    assert v["answer"] in ("yes", "no", "maybe"), v
    assert isinstance(v["count"], int) and not isinstance(v["count"], bool) and 0 <= v["count"] <= 99, v
    assert isinstance(v["words"], list) and len(v["words"]) <= 2, v
    assert all(isinstance(w, str) and len(w) <= 5 for w in v["words"]), v
    return v


def test_response_format(c):
    """`response_format` constrains the output, streamed or not, on both endpoints: json_schema
    (strict) gives JSON that fits the schema, json_object an object; a schema that does not compile
    is a 400 naming `response_format`."""
    rf = {"type": "json_schema", "json_schema": {"name": "reply", "schema": REPLY_SCHEMA, "strict": True}}
    seen = set()
    for seed in range(4):
        r = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Reply in JSON"}], max_tokens=200,
            temperature=1.0, seed=seed, response_format=rf,
        )
        assert r.choices[0].finish_reason == "stop", r
        seen.add(json.dumps(check_reply(r.choices[0].message.content), sort_keys=True))
        stream = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Reply in JSON"}], max_tokens=200,
            temperature=1.0, seed=seed, response_format=rf, stream=True,
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
    assert len(seen) > 1, seen  # sampling still samples inside the schema
    r = c.completions.create(
        model=MODEL, prompt="Hello", max_tokens=300, temperature=0.7, seed=3, n=2,
        extra_body={"response_format": {"type": "json_object"}},  # not in the client's signature
    )
    for choice in r.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.text), dict), choice.text
        else:
            assert choice.text.lstrip().startswith("{"), choice.text
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    expect_error(400, lambda: c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4, response_format=bad,
    ), param="response_format")


GBNF = 'root ::= ("yes" | "no") ", " word "."\nword ::= [a-z]{1,6}\n'
GBNF_RX = r"(yes|no), [a-z]{1,6}\."


def test_gbnf(c):
    """llama.cpp's `grammar` and vLLM's `guided_grammar` take GBNF on both endpoints: the output
    is a sentence of the grammar, streamed alike; a GBNF error is a 400 naming the field."""
    seen = set()
    for seed in range(3):
        kw = dict(model=MODEL, messages=[{"role": "user", "content": "Yes or no?"}], max_tokens=40,
                  temperature=1.0, seed=seed, extra_body={"grammar": GBNF})
        r = c.chat.completions.create(**kw)
        text = r.choices[0].message.content
        assert r.choices[0].finish_reason == "stop" and re.fullmatch(GBNF_RX, text), r
        seen.add(text)
        stream = c.chat.completions.create(stream=True, **kw)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == text
        cr = c.completions.create(model=MODEL, prompt="Hello", max_tokens=40, temperature=1.0, seed=seed,
                                  extra_body={"guided_grammar": GBNF})
        assert cr.choices[0].finish_reason == "stop" and re.fullmatch(GBNF_RX, cr.choices[0].text), cr
    assert len(seen) > 1, seen
    for field, bad in [("grammar", "root ::= [z-a]"), ("guided_grammar", "root ::= thing")]:
        expect_error(400, lambda: c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4, extra_body={field: bad},
        ), param=field)


def chat_text(c, messages, max_tokens, **kw):
    """The chat endpoint's greedy answer to `messages`: what the other APIs must give."""
    r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0, **kw)
    return r.choices[0].message.content, r.choices[0].finish_reason, r.usage


def stop_case():
    """A greedy case and a stop sequence from the middle of its text."""
    case = max(greedy_cases(), key=lambda x: len(x["text"]))
    text = case["text"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    return case, stop, text[: text.index(stop)]


def test_responses(c):
    """`client.responses.create`, streamed and not: the chat endpoint's greedy text for the same
    conversation, the response object's shape, the typed events in order with sequence numbers,
    `text.format` json_schema giving valid JSON, and the stateless refusals."""
    case = EXPECTED["chat"]
    question = case["messages"][0]["content"]
    r = c.responses.create(model=MODEL, input=question, max_output_tokens=case["max_tokens"], temperature=0)
    assert r.object == "response" and r.id.startswith("resp_"), r
    assert r.output_text == case["text"], (r.output_text, case)
    assert r.status == ("incomplete" if case["finish_reason"] == "length" else "completed"), r
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens", r
    msg = r.output[0]
    assert (msg.type, msg.role, msg.content[0].type) == ("message", "assistant", "output_text"), msg
    assert msg.content[0].annotations == [], msg
    assert r.usage.input_tokens == case["prompt_tokens"], r.usage
    assert r.usage.output_tokens == case["completion_tokens"], r.usage
    assert r.usage.total_tokens == case["prompt_tokens"] + case["completion_tokens"], r.usage
    # instructions + message items with input_text parts: the chat endpoint's system + user.
    want, finish, _ = chat_text(c, [{"role": "system", "content": "Answer briefly."},
                                    {"role": "user", "content": "Hi\nthere"}], 12)
    r = c.responses.create(
        model=MODEL, instructions="Answer briefly.", max_output_tokens=12, temperature=0,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"},
                                            {"type": "input_text", "text": "there"}]}],
    )
    assert r.output_text == want, (r.output_text, want)
    assert r.instructions == "Answer briefly." and r.max_output_tokens == 12, r
    # Streamed: the typed events, in order, numbered from 0.
    events = list(c.responses.create(model=MODEL, input=question, max_output_tokens=case["max_tokens"],
                                      temperature=0, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events))), events
    types = [e.type for e in events]
    head = ["response.created", "response.in_progress", "response.output_item.added",
            "response.content_part.added"]
    end = "response.incomplete" if case["finish_reason"] == "length" else "response.completed"
    tail = ["response.output_text.done", "response.content_part.done", "response.output_item.done", end]
    assert types[:4] == head and types[-4:] == tail, types
    assert set(types[4:-4]) == {"response.output_text.delta"}, types
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == case["text"]
    assert events[-4].text == case["text"] and events[-1].response.output_text == case["text"]
    assert events[0].response.status == "in_progress" and events[-1].response.usage.output_tokens == \
        case["completion_tokens"], events[-1]
    # text.format json_schema: JSON that fits the schema, streamed or not.
    fmt = {"format": {"type": "json_schema", "name": "reply", "schema": REPLY_SCHEMA, "strict": True}}
    for _ in range(2):
        r = c.responses.create(model=MODEL, input="Reply in JSON", max_output_tokens=200, temperature=1.0,
                               text=fmt)
        assert r.status == "completed", r
        check_reply(r.output_text)
        assert r.text.format.type == "json_schema", r.text
    events = list(c.responses.create(model=MODEL, input="Reply in JSON", max_output_tokens=200,
                                     temperature=1.0, text=fmt, stream=True))
    check_reply(events[-1].response.output_text)
    r = c.responses.create(model=MODEL, input="Reply in JSON", max_output_tokens=300, temperature=0.7,
                           text={"format": {"type": "json_object"}})
    if r.status == "completed":
        assert isinstance(json.loads(r.output_text), dict), r.output_text
    # Stateless: nothing is stored, nothing can be continued.
    expect_error(400, lambda: c.responses.create(model=MODEL, input="x", store=True), param="store")
    expect_error(400, lambda: c.responses.create(model=MODEL, input="x", previous_response_id="resp_1"),
                 param="previous_response_id")
    expect_error(400, lambda: c.responses.create(model=MODEL, input="x", temperature=3), param="temperature")
    expect_error(404, lambda: c.responses.create(model="no-such-model", input="x"), param="model")


GREEDY = {"temperature": 0}


def test_messages():
    """The `anthropic` client on `/v1/messages`, streamed and not: the chat endpoint's greedy text,
    stop_reason (end_turn / max_tokens / stop_sequence with the sequence), usage, the events in
    order, and errors in Anthropic's envelope."""
    # anthropic 2.x has no `temperature` / `top_p` / `top_k` arguments any more: they go in extra_body.
    a = anthropic.Anthropic(base_url=BASE, api_key="unused", max_retries=0, timeout=120)
    c = client()
    case = EXPECTED["chat"]
    stop_reason = {"length": "max_tokens", "stop": "end_turn"}
    m = a.messages.create(model=MODEL, max_tokens=case["max_tokens"], extra_body=GREEDY, messages=case["messages"],
                          metadata={"user_id": "u1"})
    assert (m.type, m.role, m.model) == ("message", "assistant", MODEL) and m.id.startswith("msg_"), m
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == case["text"], (m, case)
    assert m.stop_reason == stop_reason[case["finish_reason"]] and m.stop_sequence is None, m
    assert (m.usage.input_tokens, m.usage.output_tokens) == (case["prompt_tokens"], case["completion_tokens"])
    # Streamed: the helper's text and final message, and the raw events in order.
    with a.messages.stream(model=MODEL, max_tokens=case["max_tokens"], extra_body=GREEDY,
                           messages=case["messages"]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == case["text"] and final.content[0].text == case["text"], (text, final)
    assert final.stop_reason == m.stop_reason and final.usage.output_tokens == m.usage.output_tokens, final
    events = list(a.messages.create(model=MODEL, max_tokens=case["max_tokens"], extra_body=GREEDY,
                                    messages=case["messages"], stream=True))
    types = [e.type for e in events]  # (the client drops `ping`)
    assert types[:2] == ["message_start", "content_block_start"], types
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"], types
    assert set(types[2:-3]) == {"content_block_delta"}, types
    assert events[0].message.usage.input_tokens == case["prompt_tokens"], events[0]
    assert events[-2].delta.stop_reason == m.stop_reason, events[-2]
    # system blocks and text blocks: the chat endpoint's system + user (blocks joined by newlines).
    want, finish, usage = chat_text(c, [{"role": "system", "content": "Answer briefly."},
                                        {"role": "user", "content": "Hi\nthere"}], 12)
    m = a.messages.create(
        model=MODEL, max_tokens=12, extra_body=GREEDY, system=[{"type": "text", "text": "Answer briefly."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}],
    )
    assert m.content[0].text == want and m.usage.input_tokens == usage.prompt_tokens, (m, want)
    # A final assistant turn is a prefill: the answer continues it (its prompt is the prefill's,
    # left open, so it has a token or more beyond the conversation without it).
    prefill = a.messages.create(model=MODEL, max_tokens=6, extra_body=GREEDY,
                                messages=case["messages"] + [{"role": "assistant", "content": "The capital"}])
    assert prefill.usage.input_tokens > case["prompt_tokens"] and prefill.usage.output_tokens >= 1, prefill
    assert not prefill.content[0].text.startswith("The capital"), prefill
    # max_tokens ends it.
    m = a.messages.create(model=MODEL, max_tokens=3, extra_body=GREEDY, messages=case["messages"])
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3, m
    # stop_sequences: cut before the sequence, named in the answer, streamed or not.
    stop_msgs = [{"role": "user", "content": "Tell me a story."}]
    full, _, _ = chat_text(c, stop_msgs, 24)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = full[: full.index(stop)]
    m = a.messages.create(model=MODEL, max_tokens=24, extra_body=GREEDY, messages=stop_msgs,
                          stop_sequences=["\u00ff never", stop])
    assert m.content[0].text == cut, (m, cut, stop)
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", stop), m
    with a.messages.stream(model=MODEL, max_tokens=24, extra_body=GREEDY, messages=stop_msgs,
                           stop_sequences=[stop]) as s:
        assert "".join(s.text_stream) == cut
        final = s.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop), final
    # Errors: Anthropic's envelope with the OpenAI routes' statuses.
    try:
        a.messages.create(model=MODEL, max_tokens=4, extra_body={"temperature": 1.5}, messages=case["messages"])
        raise AssertionError("temperature 1.5 was accepted")
    except anthropic.BadRequestError as e:
        assert e.status_code == 400 and e.body["type"] == "error", e.body
        assert e.body["error"]["type"] == "invalid_request_error", e.body
        assert "temperature" in e.body["error"]["message"], e.body
    try:
        a.messages.create(model=MODEL, max_tokens=4, messages=case["messages"],
                          tools=[{"type": "web_search_20250305", "name": "web_search"}])
        raise AssertionError("a server tool was accepted")
    except anthropic.BadRequestError as e:
        assert "tools[0].type" in e.body["error"]["message"], e.body
    try:
        a.messages.create(model="no-such-model", max_tokens=4, messages=case["messages"])
        raise AssertionError("an unknown model was accepted")
    except anthropic.NotFoundError as e:
        assert e.body["error"]["type"] == "not_found_error", e.body


def test_new_streams_cancel_on_disconnect(c):
    """A client that leaves a /v1/messages or /v1/responses stream cancels its request (a greedy
    answer of about 270 tokens, still running when the client reads the first event and goes)."""
    a = anthropic.Anthropic(base_url=BASE, api_key="unused", max_retries=0, timeout=120)
    story = [{"role": "user", "content": "Tell me a story."}]
    before = metrics().get("lmgen_client_disconnects_total", 0)
    s = a.messages.create(model=MODEL, max_tokens=400, messages=story, extra_body=GREEDY, stream=True)
    assert next(iter(s)).type == "message_start"
    s.close()
    s = c.responses.create(model=MODEL, input=story, max_output_tokens=400, temperature=0, stream=True)
    assert next(iter(s)).type == "response.created"
    s.close()
    deadline = time.time() + 30
    while metrics().get("lmgen_client_disconnects_total", 0) < before + 2:
        assert time.time() < deadline, metrics()
        time.sleep(0.05)
    wait_idle()


def test_queue_full():
    small = os.environ["LMGEN_SMALL_URL"]
    c = client(small)
    p = greedy_cases()[0]["prompt"]
    streams = []
    for _ in range(2):  # one running, one queued
        s = c.completions.create(model=MODEL, prompt=p, max_tokens=400, temperature=0, stream=True,
                                 extra_body={"min_tokens": 400})
        streams.append(s)
    e = expect_error(429, lambda: c.completions.create(model=MODEL, prompt=p, max_tokens=4))
    assert e.response.headers.get("retry-after")
    for s in streams:
        s.close()
    # Once the clients are gone their requests are cancelled and the places free up.
    deadline = time.time() + 30
    while True:
        try:
            c.completions.create(model=MODEL, prompt=p, max_tokens=2)
            break
        except openai.RateLimitError:
            assert time.time() < deadline, "places never freed"
            time.sleep(0.1)
    wait_idle(small)


def wait_idle(base=BASE, timeout=30):
    deadline = time.time() + timeout
    while True:
        m = metrics(base)
        if m.get("lmgen_running_sequences") == 0 and m.get("lmgen_kv_blocks_used") == 0 \
                and m.get("lmgen_queue_depth") == 0:
            return m
        assert time.time() < deadline, m
        time.sleep(0.05)


def functional():
    c = client()
    urllib.request.urlopen(BASE + "/health", timeout=10).read()
    for test in [test_models, test_completions, test_chat, test_n_and_seed, test_stop, test_logprobs, test_errors,
                 test_hf_extras, test_response_format, test_gbnf, test_responses]:
        test(c)
        print("ok", test.__name__, flush=True)
    test_messages()
    print("ok test_messages", flush=True)
    test_new_streams_cancel_on_disconnect(c)
    print("ok test_new_streams_cancel_on_disconnect", flush=True)
    test_queue_full()
    print("ok test_queue_full", flush=True)
    m = wait_idle()
    requests = lambda m, endpoint, status: m.get(  # noqa: E731
        f'lmgen_requests_total{{endpoint="{endpoint}",status="{status}"}}', 0)
    assert requests(m, "completions", 200) > 0 and requests(m, "chat_completions", 200) > 0, m
    assert requests(m, "completions", 400) >= 15 and requests(m, "chat_completions", 400) >= 1, m
    assert requests(m, "completions", 404) >= 1 and requests(m, "completions", 413) >= 1, m
    for endpoint in ["messages", "responses"]:
        assert requests(m, endpoint, 200) > 0 and requests(m, endpoint, 400) > 0, m
        assert requests(m, endpoint, 404) == 1, m
    assert requests(metrics(os.environ["LMGEN_SMALL_URL"]), "completions", 429) >= 1
    assert m["lmgen_time_to_first_token_seconds_count"] > 0, m
    assert m["lmgen_inter_token_latency_seconds_count"] > 0, m
    assert m["lmgen_generation_tokens_total"] > 0, m
    print("ok metrics", flush=True)


def long_streams(c, count, choices=1):
    """`count` streaming requests of `choices` choices that each generate up to the context
    length (admitted, not yet read)."""
    case = greedy_cases()[0]
    n = EXPECTED["context_length"] - case["prompt_tokens"]
    streams = [
        c.completions.create(
            model=MODEL, prompt=case["prompt"], max_tokens=n, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"min_tokens": n}, n=choices,
        )
        for _ in range(count)
    ]
    return streams, n


def sigterm_and_wait_for_503():
    os.kill(int(os.environ["LMGEN_SERVER_PID"]), signal.SIGTERM)
    deadline = time.time() + 10
    while True:  # /health turns 503 as soon as the signal is handled
        try:
            urllib.request.urlopen(BASE + "/health", timeout=10).read()
        except urllib.error.HTTPError as e:
            assert e.code == 503, e.code
            return
        assert time.time() < deadline, "/health never turned 503 after SIGTERM"
        time.sleep(0.002)


def shutdown():
    """SIGTERM while requests run and wait (--max-running 1): new requests get 503, every
    admitted one completes."""
    c = client()
    streams, n = long_streams(c, 4)
    sigterm_and_wait_for_503()
    e = expect_error(503, lambda: c.completions.create(model=MODEL, prompt="x", max_tokens=2))
    assert e.response.headers.get("retry-after")
    for stream in streams:
        finish, usage = None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
                continue
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "length", finish  # drained: the request completed
        assert usage.completion_tokens == n, usage
    print(f"ok shutdown drained {len(streams)} requests of {n} tokens", flush=True)


def shutdown_timeout():
    """SIGTERM with a drain timeout too short for the requests: they end with an error event and
    the server exits."""
    c = client()
    # 64 choices of ~500 tokens one at a time (--max-running 1): ~32k decode steps, over a second
    # even at the tiny model's ~20k tokens/s on one core, so some are left when the 0.2 s are up
    # (four single choices were not: a fast machine finished them within the timeout).
    streams, _ = long_streams(c, 4, choices=16)
    sigterm_and_wait_for_503()
    ended = 0
    for stream in streams:
        try:
            for _ in stream:
                pass
        except openai.APIError as e:
            assert "stopped" in str(e) or "cancel" in str(e), e
            ended += 1
    assert ended >= 1, "no request was cut by the drain timeout"
    print(f"ok shutdown timeout: {ended} requests cut", flush=True)


#: What a disconnecting client of `concurrency` asks for.
QUITTER_TOKENS = 200


async def concurrency():
    cases = EXPECTED["concurrency"]
    c = AsyncOpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=300)
    rng = random.Random(7)
    quitters = set(rng.sample(range(len(cases)), len(cases) // 4))

    async def one(i, case):
        # A quitter asks for far more tokens than it reads (`min_tokens` keeps EOS away), so it is
        # still running when it leaves, however the steps and the reads interleave.
        extra = {"min_tokens": QUITTER_TOKENS} if i in quitters else {}
        stream = await c.completions.create(
            model=MODEL, prompt=case["prompt"],
            max_tokens=QUITTER_TOKENS if i in quitters else case["max_tokens"],
            temperature=0, stream=True, extra_body=extra,
        )
        text, finish, n = "", None, 0
        leave_after = rng.randint(0, 4) if i in quitters else None
        async for chunk in stream:
            if leave_after is not None and n >= leave_after:
                await stream.close()  # disconnect mid-stream
                return None
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
            n += 1
        return text, finish

    results = await asyncio.gather(*(one(i, case) for i, case in enumerate(cases)))
    completed = 0
    for i, (case, res) in enumerate(zip(cases, results)):
        if i in quitters:
            continue
        assert res is not None, i
        assert res[0] == case["text"], (i, res, case)
        assert res[1] == case["finish_reason"], (i, res, case)
        completed += 1
    m = wait_idle()
    assert m["lmgen_client_disconnects_total"] > 0, m
    # The engine itself ended requests as cancelled (not just the HTTP side letting go).
    assert m["lmgen_engine_cancelled_requests"] > 0, m
    print(f"ok concurrency: {completed} completed, {len(quitters)} disconnected "
          f"({int(m['lmgen_client_disconnects_total'])} while running, "
          f"{int(m['lmgen_engine_cancelled_requests'])} cancelled in the engine)", flush=True)
    await c.close()


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 12}},
                   "required": ["zone"], "additionalProperties": False}}}
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_args(name, arguments):
    """`arguments` (JSON text) is valid under the tool `name`'s schema."""
    args = json.loads(arguments)
    if name == "get_weather":
        assert set(args) == {"city", "unit"}, args
        assert isinstance(args["city"], str) and len(args["city"]) <= 8, args
        assert args["unit"] in ("c", "f"), args
    else:
        assert name == "get_time", name
        assert set(args) == {"zone"}, args
        z = args["zone"]
        assert isinstance(z, int) and not isinstance(z, bool) and -12 <= z <= 12, args
    return args


def chat(c, **kw):
    kw.setdefault("messages", ASK)
    return c.chat.completions.create(model=MODEL, **kw)


ARG_CHUNKS = []  # how many argument deltas each streamed call came in


def streamed(c, **kw):
    """The stream of `chat(**kw)` folded into (content, reasoning, calls, finish_reason); calls
    as [(id, name, arguments)], rebuilt from their deltas by `index`."""
    content, reasoning, calls, finish = "", "", {}, None
    chunks = {}
    for ch in chat(c, stream=True, **kw):
        if not ch.choices:
            continue
        choice = ch.choices[0]
        d = choice.delta
        content += d.content or ""
        reasoning += getattr(d, "reasoning_content", None) or ""
        for tc in d.tool_calls or []:
            if tc.index not in calls:
                # The first delta of a call names it.
                assert tc.id and tc.id.startswith("call_") and tc.type == "function", tc
                assert tc.function.name, tc
                calls[tc.index] = [tc.id, tc.function.name, tc.function.arguments or ""]
            else:
                assert tc.id is None and tc.function.name is None, tc
                calls[tc.index][2] += tc.function.arguments or ""
                chunks[tc.index] = chunks.get(tc.index, 0) + 1
        if choice.finish_reason is not None:
            assert finish is None, "two finish reasons"
            finish = choice.finish_reason
    assert sorted(calls) == list(range(len(calls))), calls
    ARG_CHUNKS.extend(chunks.values())
    return content, reasoning, [tuple(calls[i]) for i in range(len(calls))], finish


def test_tool_choice_enforced(c):
    """`required` and a named function always give valid calls (the grammar writes Qwen's
    `<tool_call>` format, which the parser reads back), streamed or not, alike: a call's id,
    type and name first, then its arguments in pieces."""
    seen = set()
    for seed in range(3):
        for parallel in [True, False]:
            kw = dict(tools=[WEATHER, CLOCK], tool_choice="required", temperature=1.0, seed=seed,
                      max_tokens=400, parallel_tool_calls=parallel, extra_body=NO_THINK)
            r = chat(c, **kw)
            choice = r.choices[0]
            calls = choice.message.tool_calls
            assert calls, r
            if not parallel:
                assert choice.finish_reason == "tool_calls" and len(calls) == 1, r
            else:
                # More calls may follow until max_tokens cuts the last one short.
                assert choice.finish_reason in ("tool_calls", "length"), r
            whole = calls[:-1] if choice.finish_reason == "length" else calls
            for call in calls:
                assert call.type == "function" and call.id.startswith("call_"), call
            for call in whole:
                seen.add(json.dumps([call.function.name, check_args(call.function.name, call.function.arguments)]))
            assert len({call.id for call in calls}) == len(calls), calls
            assert choice.message.content is None, choice.message
            content, reasoning, scalls, finish = streamed(c, **kw)
            assert [(n, a) for _, n, a in scalls] == [(x.function.name, x.function.arguments) for x in calls], \
                (scalls, calls)
            assert (content, reasoning, finish) == ("", "", choice.finish_reason), (content, reasoning, finish)
    assert len(seen) > 1, seen  # sampling still samples inside the grammar
    assert max(ARG_CHUNKS) > 3, ARG_CHUNKS  # the arguments stream as they are written
    named = {"type": "function", "function": {"name": "get_time"}}
    for seed in range(2):
        kw = dict(tools=[WEATHER, CLOCK], tool_choice=named, temperature=1.0, seed=seed, max_tokens=300,
                  extra_body=NO_THINK)
        r = chat(c, **kw)
        calls = r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1, r
        assert calls[0].function.name == "get_time"
        check_args("get_time", calls[0].function.arguments)
        _, _, scalls, finish = streamed(c, **kw)
        assert [(n, a) for _, n, a in scalls] == [("get_time", calls[0].function.arguments)], scalls
        assert finish == "tool_calls"
    # With thinking left open by the prompt, the enforced output closes it first: no reasoning.
    r = chat(c, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=300)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls", r
    check_args("get_weather", msg.tool_calls[0].function.arguments)
    assert getattr(msg, "reasoning_content", None) is None and msg.content is None, msg


def test_tool_auto_none_and_kwargs(c):
    """`auto` answers well-formed (the tiny model writes no call by itself), streamed alike;
    `none` renders the same prompt; `chat_template_kwargs` reach the template."""
    kw = dict(tools=[WEATHER], temperature=0, max_tokens=24, extra_body=NO_THINK)
    r = chat(c, **kw)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls"), r
    if choice.message.tool_calls is None:
        assert isinstance(choice.message.content, str), r
    content, reasoning, calls, finish = streamed(c, **kw)
    assert (content or None, finish) == (choice.message.content, choice.finish_reason), (content, r)
    none = chat(c, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=24, extra_body=NO_THINK)
    assert none.usage.prompt_tokens == r.usage.prompt_tokens, (none.usage, r.usage)
    assert none.choices[0].message.tool_calls is None
    plain = chat(c, temperature=0, max_tokens=2, extra_body=NO_THINK)
    assert plain.usage.prompt_tokens < r.usage.prompt_tokens  # the tools are in the prompt
    thinking = chat(c, temperature=0, max_tokens=2)
    assert thinking.usage.prompt_tokens < plain.usage.prompt_tokens  # `<think>\n` vs a closed one


def test_reasoning(c):
    """The prompt leaves `<think>` open: the output is reasoning (`reasoning_content`), streamed
    alike, and no content unless it closes it."""
    kw = dict(temperature=0, max_tokens=16)
    r = chat(c, **kw)
    msg = r.choices[0].message
    reasoning = getattr(msg, "reasoning_content", None)
    assert reasoning, msg
    content, sreasoning, calls, finish = streamed(c, **kw)
    assert (sreasoning, content or None, calls, finish) == (reasoning, msg.content, [], r.choices[0].finish_reason)
    if "</think>" not in reasoning:
        assert msg.content is None, msg


def test_reasoning_on_messages_and_responses(c):
    """With `<think>` left open by the prompt, /v1/messages and /v1/responses answer the chat
    endpoint's content, streamed or not: the reasoning is read out as chat reads it, and not
    returned."""
    for max_tokens in [16, 120]:
        r = chat(c, temperature=0, max_tokens=max_tokens)
        content = r.choices[0].message.content or ""
        assert getattr(r.choices[0].message, "reasoning_content", None), r
        a = anthropic.Anthropic(base_url=BASE, api_key="unused", max_retries=0, timeout=120)
        m = a.messages.create(model=MODEL, max_tokens=max_tokens, messages=ASK, extra_body=GREEDY)
        assert m.content[0].text == content, (m, content)
        with a.messages.stream(model=MODEL, max_tokens=max_tokens, messages=ASK, extra_body=GREEDY) as s:
            assert "".join(s.text_stream) == content
        resp = c.responses.create(model=MODEL, input=ASK, max_output_tokens=max_tokens, temperature=0)
        assert resp.output_text == content, (resp, content)
        events = list(c.responses.create(model=MODEL, input=ASK, max_output_tokens=max_tokens, temperature=0,
                                         stream=True))
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == content
        assert events[-1].response.output_text == content
        # The reasoning as a `reasoning` item (the first), its text streamed as reasoning_text deltas.
        reasoning = r.choices[0].message.reasoning_content
        assert resp.output[0].type == "reasoning" and resp.output[0].content[0].text == reasoning, resp
        assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == reasoning
        assert events[-1].response.output[0].content[0].text == reasoning


def test_thinking_on_messages(c):
    """Anthropic's extended thinking: `enabled` returns the reasoning as a thinking block (empty
    signature) before the text, cut after exactly `budget_tokens` tokens (greedy, it is the chat
    endpoint's reasoning for `max_tokens` = the budget) and followed by an answer; streamed as
    content_block_start (thinking), thinking_delta, signature_delta, content_block_stop, then
    the text block; `display: omitted` empties it; `disabled` turns thinking off."""
    a = anthropic.Anthropic(base_url=BASE, api_key="unused", max_retries=0, timeout=300)
    budget = 1024
    kw = dict(model=MODEL, max_tokens=1100, messages=ASK, extra_body=GREEDY,
              thinking={"type": "enabled", "budget_tokens": budget})
    m = a.messages.create(**kw)
    assert [b.type for b in m.content] == ["thinking", "text"], m
    thinking = m.content[0]
    assert thinking.signature == "" and thinking.thinking, m
    ref = chat(c, temperature=0, max_tokens=budget, extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert ref.choices[0].finish_reason == "length" and ref.usage.completion_tokens == budget, ref
    assert ref.choices[0].message.content is None, ref  # the model does not close it by itself
    assert thinking.thinking == ref.choices[0].message.reasoning_content, (thinking.thinking[-80:], ref)
    # The marker was forced, so the answer follows (and the chat endpoint reads it the same way).
    assert m.content[1].text and m.usage.output_tokens > budget, m
    events = list(a.messages.create(stream=True, **kw))
    kinds = [(e.type, getattr(getattr(e, "content_block", None), "type", None) or
              getattr(getattr(e, "delta", None), "type", None)) for e in events]
    # (The client does not hand out `ping`.)
    assert kinds[:2] == [("message_start", None), ("content_block_start", "thinking")], kinds[:4]
    first_text = kinds.index(("content_block_start", "text"))
    assert kinds[first_text - 2:first_text] == [("content_block_delta", "signature_delta"),
                                                ("content_block_stop", None)], kinds[first_text - 3:first_text + 1]
    assert set(kinds[2:first_text - 2]) == {("content_block_delta", "thinking_delta")}, kinds
    assert "".join(e.delta.thinking for e in events if getattr(getattr(e, "delta", None), "type", None) == "thinking_delta") == thinking.thinking
    assert all(e.index == 0 for e in events[1:first_text] if hasattr(e, "index"))
    assert all(e.index == 1 for e in events[first_text:] if hasattr(e, "index")), kinds
    assert "".join(e.delta.text for e in events if getattr(getattr(e, "delta", None), "type", None) == "text_delta") == m.content[1].text
    with a.messages.stream(**kw) as s:
        final = s.get_final_message()
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in final.content] == \
           [("thinking", thinking.thinking), ("text", m.content[1].text)], final
    # `display: omitted`: the block without its text.
    omitted = dict(kw, thinking={"type": "enabled", "budget_tokens": budget, "display": "omitted"})
    m2 = a.messages.create(**omitted)
    assert [(b.type, getattr(b, "thinking", None)) for b in m2.content][0] == ("thinking", ""), m2
    assert m2.content[1].text == m.content[1].text, m2
    events = list(a.messages.create(stream=True, **omitted))
    assert not [e for e in events if getattr(getattr(e, "delta", None), "type", None) == "thinking_delta"]
    # `disabled`: the template's thinking is off (chat's enable_thinking false); no thinking block.
    off = a.messages.create(model=MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY,
                            thinking={"type": "disabled"})
    ref = chat(c, temperature=0, max_tokens=16, **{"extra_body": NO_THINK})
    assert [b.type for b in off.content] == ["text"] and off.content[0].text == ref.choices[0].message.content, off
    assert off.usage.input_tokens == ref.usage.prompt_tokens, (off, ref)


WEATHER_TOOL = {"name": "get_weather", "description": WEATHER["function"]["description"],
                "input_schema": WEATHER["function"]["parameters"]}
CLOCK_TOOL = {"name": "get_time", "input_schema": CLOCK["function"]["parameters"]}


def test_tools_on_messages(c):
    """Anthropic's tools on /v1/messages: `any` / `tool` enforce calls (as chat's `required` / a
    named function: the same calls, greedy) that come back as tool_use blocks with stop_reason
    tool_use, streamed alike (input_json_delta); `disable_parallel_tool_use`; a round trip of
    tool_use and tool_result blocks renders as chat's tool_calls and tool messages."""
    a = anthropic.Anthropic(base_url=BASE, api_key="unused", max_retries=0, timeout=120)
    for choice, chat_choice in [
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}),
        ({"type": "any", "disable_parallel_tool_use": True}, "required"),
    ]:
        parallel = not choice.get("disable_parallel_tool_use", False)
        r = chat(c, tools=[WEATHER, CLOCK], tool_choice=chat_choice, parallel_tool_calls=parallel,
                 temperature=0, max_tokens=200)
        want = [(t.function.name, json.loads(t.function.arguments)) for t in r.choices[0].message.tool_calls]
        m = a.messages.create(model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER_TOOL, CLOCK_TOOL],
                              tool_choice=choice, extra_body=GREEDY)
        assert m.stop_reason == "tool_use", m
        calls = [(b.name, b.input) for b in m.content if b.type == "tool_use"]
        assert calls == want and all(b.id.startswith("toolu_") for b in m.content if b.type == "tool_use"), \
            (calls, want)
        for name, args in calls:
            check_args(name, json.dumps(args))
        if not parallel:
            assert len(calls) == 1, calls
        with a.messages.stream(model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER_TOOL, CLOCK_TOOL],
                               tool_choice=choice, extra_body=GREEDY) as s:
            final = s.get_final_message()
        assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == want, final
        assert final.stop_reason == "tool_use", final
    # A round trip: the call and its result are in the prompt, as chat's tool_calls and tool message.
    first = a.messages.create(model=MODEL, max_tokens=4, messages=ASK, tools=[WEATHER_TOOL], extra_body=GREEDY)
    turn = [{"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "unit": "c"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 degrees, sunny"}]}]
    m = a.messages.create(model=MODEL, max_tokens=4, messages=ASK + turn, tools=[WEATHER_TOOL], extra_body=GREEDY)
    assert m.usage.input_tokens > first.usage.input_tokens + 20, (m.usage, first.usage)
    chat_turn = [{"role": "assistant", "content": None, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {
                     "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
                 {"role": "tool", "tool_call_id": "toolu_1", "content": "18 degrees, sunny"}]
    r = chat(c, messages=ASK + chat_turn, tools=[WEATHER], temperature=0, max_tokens=4)
    assert m.usage.input_tokens == r.usage.prompt_tokens, (m.usage, r.usage)


RESP_WEATHER = {"type": "function", **WEATHER["function"]}
RESP_CLOCK = {"type": "function", **CLOCK["function"]}


def check_item_events(events):
    """Numbered from 0; each output item added, then its deltas, then done, before the next."""
    assert [e.sequence_number for e in events] == list(range(len(events))), events
    open_index = None
    for e in events:
        if e.type == "response.output_item.added":
            assert open_index is None, e
            open_index = e.output_index
        elif e.type == "response.output_item.done":
            assert e.output_index == open_index, e
            open_index = None
        elif hasattr(e, "output_index"):
            assert e.output_index == open_index, e
    assert open_index is None
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    assert added == list(range(len(added))), added


def test_tools_on_responses(c):
    """Function tools on /v1/responses: `required` and a named function give the chat endpoint's
    calls (greedy) as function_call items (id, call_id, name, arguments), streamed alike
    (output_item.added with the name, function_call_arguments deltas and done); function_call and
    function_call_output input items render as chat's tool round trip."""
    for choice, chat_choice, parallel in [
        ("required", "required", True),
        ({"type": "function", "name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}, True),
        ("required", "required", False),
    ]:
        r = chat(c, tools=[WEATHER, CLOCK], tool_choice=chat_choice, parallel_tool_calls=parallel,
                 temperature=0, max_tokens=200)
        want = [(t.function.name, t.function.arguments) for t in r.choices[0].message.tool_calls]
        kw = dict(model=MODEL, input=ASK, tools=[RESP_WEATHER, RESP_CLOCK], tool_choice=choice,
                  parallel_tool_calls=parallel, temperature=0, max_output_tokens=200)
        resp = c.responses.create(**kw)
        assert resp.status == "completed", resp
        items = [o for o in resp.output if o.type == "function_call"]
        assert [(o.name, o.arguments) for o in items] == want, (resp.output, want)
        for o in items:
            check_args(o.name, o.arguments)
            assert o.call_id.startswith("call_") and o.id.startswith("fc_") and o.status == "completed", o
        assert len({o.call_id for o in items}) == len(items), items
        assert resp.tool_choice == choice or resp.tool_choice.name == "get_time", resp.tool_choice
        assert [t.name for t in resp.tools] == ["get_weather", "get_time"], resp.tools
        assert resp.parallel_tool_calls == parallel, resp
        if not parallel:
            assert len(items) == 1, items
        events = list(c.responses.create(stream=True, **kw))
        check_item_events(events)
        final = events[-1].response
        assert final.status == "completed", final
        assert [(o.name, o.arguments) for o in final.output if o.type == "function_call"] == want, final
        for k, o in enumerate(final.output):
            if o.type != "function_call":
                continue
            added = [e.item for e in events if e.type == "response.output_item.added" and e.output_index == k]
            assert added[0].type == "function_call" and added[0].name == o.name, added
            assert added[0].call_id == o.call_id and added[0].id == o.id, (added, o)
            deltas = [e.delta for e in events
                      if e.type == "response.function_call_arguments.delta" and e.output_index == k]
            assert "".join(deltas) == o.arguments and len(deltas) > 1, deltas
            done = [e for e in events if e.type == "response.function_call_arguments.done" and e.output_index == k]
            assert len(done) == 1 and done[0].arguments == o.arguments and done[0].item_id == o.id, done
    # A round trip: the call and its output are in the prompt as chat's tool_calls and tool message.
    args = json.dumps({"city": "Paris", "unit": "c"})
    turn = [{"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": args},
            {"type": "function_call_output", "call_id": "call_1", "output": "18 degrees, sunny"}]
    resp = c.responses.create(model=MODEL, input=ASK + turn, tools=[RESP_WEATHER], temperature=0,
                              max_output_tokens=4)
    chat_turn = [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
                 {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"}]
    r = chat(c, messages=ASK + chat_turn, tools=[WEATHER], temperature=0, max_tokens=4)
    first = chat(c, tools=[WEATHER], temperature=0, max_tokens=4)
    assert resp.usage.input_tokens == r.usage.prompt_tokens > first.usage.prompt_tokens + 20, (resp.usage, r.usage)
    assert resp.output_text == (r.choices[0].message.content or ""), (resp, r)
    expect_error(400, lambda: c.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}]),
                 param="tools[0].type")
    expect_error(400, lambda: c.responses.create(model=MODEL, input="x", tools=[RESP_WEATHER],
                                                 tool_choice={"type": "function", "name": "nope"}),
                 param="tool_choice")


def test_tool_round_trip(c):
    """An assistant message with tool_calls (content null) and the tool's answer render."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "c"})}}
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    r = chat(c, messages=messages, tools=[WEATHER], temperature=0, max_tokens=8, extra_body=NO_THINK)
    first = chat(c, tools=[WEATHER], temperature=0, max_tokens=8, extra_body=NO_THINK)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls"), r
    # The call and the answer are in the prompt.
    assert r.usage.prompt_tokens > first.usage.prompt_tokens + 20, (r.usage, first.usage)


def test_tool_errors(c):
    def ask(**kw):
        return lambda: chat(c, max_tokens=4, **kw)
    expect_error(400, ask(tool_choice="required"), param="tool_choice")
    expect_error(400, ask(tools=[{"type": "retrieval"}]), param="tools[0].type")
    expect_error(400, ask(tools=[{"type": "function", "function": {"description": "x"}}]),
                 param="tools[0].function.name")
    expect_error(400, ask(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}),
                 param="tool_choice")
    expect_error(400, ask(tools=[WEATHER], tool_choice="sometimes"), param="tool_choice")
    expect_error(400, ask(tools=[WEATHER], tool_choice="required", response_format={"type": "json_object"}),
                 param="tool_choice")
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "no-such-type"}}}
    expect_error(400, ask(tools=[bad], tool_choice="required"), param="tools")
    expect_error(400, ask(extra_body={"chat_template_kwargs": {"add_generation_prompt": False}}),
                 param="chat_template_kwargs")


def tools():
    c = client()
    for test in [test_tool_choice_enforced, test_tool_auto_none_and_kwargs, test_reasoning,
                 test_reasoning_on_messages_and_responses, test_thinking_on_messages, test_tools_on_messages,
                 test_tools_on_responses,
                 test_tool_round_trip, test_tool_errors]:
        test(c)
        print("ok", test.__name__, flush=True)


def audio():
    """Transcriptions and translations with multipart uploads, as the library answers them."""
    c = client()
    path = EXPECTED["audio"]

    def upload(create, **kw):
        with open(path, "rb") as f:
            return create(model=MODEL, file=f, **kw)

    r = upload(c.audio.transcriptions.create, response_format="json")
    assert r.text == json.loads(EXPECTED["json"])["text"], (r, EXPECTED["json"])
    t = upload(c.audio.transcriptions.create, response_format="text")
    assert t == EXPECTED["text"], (t, EXPECTED["text"])
    want = json.loads(EXPECTED["verbose_json"])
    v = upload(c.audio.transcriptions.create, response_format="verbose_json")
    assert v.text == want["text"] and v.language == want["language"], (v, want)
    assert [(s.start, s.end, s.text) for s in v.segments] == [
        (s["start"], s["end"], s["text"]) for s in want["segments"]], (v.segments, want["segments"])
    want = json.loads(EXPECTED["translation"])
    tr = upload(c.audio.translations.create, response_format="verbose_json")
    assert tr.text == want["text"], (tr, want)
    expect_error(400, lambda: upload(c.audio.transcriptions.create, response_format="mp3"),
                 param="response_format")
    print("ok audio", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "functional":
        functional()
    elif mode == "shutdown":
        shutdown()
    elif mode == "shutdown_timeout":
        shutdown_timeout()
    elif mode == "tools":
        tools()
    elif mode == "concurrency":
        asyncio.run(concurrency())
    elif mode == "audio":
        audio()
    else:
        raise SystemExit(f"unknown mode {mode}")
