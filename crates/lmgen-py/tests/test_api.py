"""The transformers-shaped API around generate(): Python logits processors and stopping criteria
(checked against transformers' golden outputs of the built-in processors they reimplement),
streaming (against transformers' TextIteratorStreamer chunks), output kinds, tokenizer, pipeline,
batching, and errors."""

import threading

import numpy as np
import pytest

import lmgen
from conftest import golden_cases, golden_model_dir

GENERATE = golden_cases()


def case(model, name):
    return next(c for c in GENERATE if c["model"] == model and c["name"] == name)


@pytest.mark.parametrize("model_name", ["gpt2", "llama", "qwen2", "gemma2"])
def test_python_logits_processor_matches_transformers_suppress_tokens(model_name, models):
    # A Python processor that does what transformers' SuppressTokensLogitsProcessor does, with
    # `suppress_tokens` left out of the config: the golden `suppress_tokens` sequences.
    c = case(model_name, "suppress_tokens")
    config = dict(c["generation_config"])
    suppressed = config.pop("suppress_tokens")
    calls = []

    def suppress(input_ids, scores):
        assert isinstance(input_ids, np.ndarray) and input_ids.dtype == np.int64
        assert scores.dtype == np.float32 and scores.shape[0] == input_ids.shape[0]
        calls.append(input_ids.shape)
        scores[:, suppressed] = -np.inf
        return scores

    out = models(model_name).generate(
        np.asarray(c["input_ids"]), attention_mask=np.asarray(c["attention_mask"]),
        logits_processor=lmgen.LogitsProcessorList([suppress]), **config)
    assert out.tolist() == c["expected"]["sequences"]
    prompt = len(c["input_ids"][0])
    generated = len(c["expected"]["sequences"][0]) - prompt
    # Called once per step with the tokens so far: [b, prompt], [b, prompt + 1], ...
    assert [s[1] for s in calls] == list(range(prompt, prompt + generated))


@pytest.mark.parametrize("model_name", ["gpt2", "llama", "mistral"])
def test_python_stopping_criterion_matches_transformers_max_length(model_name, models):
    # A criterion that stops at `max_length` tokens, as MaxLengthCriteria: the golden
    # `max_length` sequences, with a larger `max_length` in the config.
    c = case(model_name, "max_length")
    config = dict(c["generation_config"])
    max_length = config.pop("max_length")

    class StopAt(lmgen.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            assert input_ids.shape[0] == 1 and scores is None
            return input_ids.shape[-1] >= max_length

    out = models(model_name).generate(
        np.asarray(c["input_ids"]), attention_mask=np.asarray(c["attention_mask"]),
        stopping_criteria=lmgen.StoppingCriteriaList([StopAt()]), max_length=max_length + 10,
        **config)
    assert out.tolist() == c["expected"]["sequences"]


@pytest.mark.parametrize("streaming", golden_cases("streaming.json"), ids=lambda s: s["model"])
def test_text_iterator_streamer_matches_transformers_chunks(streaming, models):
    # transformers' TextIteratorStreamer(skip_prompt=True, skip_special_tokens=True) chunks over a
    # greedy generation, with generate() on another thread as in transformers' docs. Empty chunks
    # are left out, as the Rust streaming test does.
    model = models(streaming["model"])
    tokenizer = model.tokenizer
    prompt = streaming["input_ids"]
    new = len(streaming["sequence"]) - len(prompt[0])
    streamer = lmgen.TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                          timeout=60)
    result = {}

    def run():
        result["out"] = model.generate(prompt, streamer=streamer, do_sample=False,
                                       max_new_tokens=new, min_new_tokens=new)

    thread = threading.Thread(target=run)
    thread.start()
    chunks = [c for c in streamer if c]
    thread.join()
    assert result["out"][0] == streaming["sequence"]
    assert chunks == [c for c in streaming["chunks"] if c]


def test_python_streamer_object_gets_the_prompt_then_each_token(models):
    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], 0

        def put(self, value):
            self.puts.append(np.asarray(value).tolist())

        def end(self):
            self.ended += 1

    c = case("llama", "greedy")
    rec = Recorder()
    out = models("llama").generate(c["input_ids"], streamer=rec, **c["generation_config"])
    assert out == c["expected"]["sequences"]
    prompt = c["input_ids"][0]
    assert rec.puts[0] == [prompt]
    assert [p[0] for p in rec.puts[1:]] == out[0][len(prompt):]
    assert rec.ended == 1


def test_outputs_take_the_kind_of_the_inputs(models):
    c = case("llama", "greedy")
    model = models("llama")
    as_list = model.generate(c["input_ids"], **c["generation_config"])
    as_np = model.generate(np.asarray(c["input_ids"]), **c["generation_config"])
    assert isinstance(as_list, list) and as_list == c["expected"]["sequences"]
    assert isinstance(as_np, np.ndarray) and as_np.tolist() == as_list


def test_torch_tensors_in_torch_tensors_out(models):
    torch = pytest.importorskip("torch")
    c = case("llama", "greedy")
    out = models("llama").generate(
        torch.tensor(c["input_ids"]), output_scores=True, return_dict_in_generate=True,
        **c["generation_config"])
    assert isinstance(out.sequences, torch.Tensor) and out.sequences.dtype == torch.int64
    assert out.sequences.tolist() == c["expected"]["sequences"]
    assert isinstance(out.scores[0], torch.Tensor)


def test_beam_output_has_transformers_fields(models):
    c = case("llama", "beam_return_3")
    out = models("llama").generate(np.asarray(c["input_ids"]), return_dict_in_generate=True,
                                   output_scores=True, **c["generation_config"])
    assert isinstance(out, lmgen.GenerateBeamDecoderOnlyOutput)
    assert out.sequences.tolist() == c["expected"]["sequences"]
    assert out["sequences"] is out.sequences and out[0] is out.sequences
    assert out.beam_indices.shape[0] == out.sequences.shape[0]


def test_tokenizer_and_pipeline(models):
    model = models("llama")
    tokenizer = lmgen.AutoTokenizer.from_pretrained(golden_model_dir("llama"), padding_side="left")
    s = golden_cases("streaming.json")[0]
    enc = tokenizer([s["prompt"]], return_tensors="np")
    assert enc["input_ids"].tolist() == s["input_ids"]
    ids = model.generate(**enc, do_sample=False, max_new_tokens=5)
    assert ids.tolist()[0][: len(s["input_ids"][0])] == s["input_ids"][0]
    new = tokenizer.decode(ids[0][len(s["input_ids"][0]):], skip_special_tokens=True)
    pipe = lmgen.pipeline("text-generation", model=model)
    # transformers 5's pipeline: the prompt text, then the new tokens decoded on their own.
    got = pipe(s["prompt"], do_sample=False, max_new_tokens=5)
    assert got == [{"generated_text": s["prompt"] + new}]
    # A padded batch: left padding, a mask of zeros on the pad.
    tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(["a", s["prompt"]], padding=True, return_tensors="np")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1].all()


def test_generate_batch_and_manager_match_generate(models):
    model = models("llama")
    c = case("llama", "greedy_batch_left_padded")
    prompts = [[t for t, m in zip(row, mask) if m]
               for row, mask in zip(c["input_ids"], c["attention_mask"])]
    config = lmgen.GenerationConfig(do_sample=False, max_new_tokens=8)
    want = [model.generate([p], generation_config=config)[0][len(p):] for p in prompts]
    got = model.generate_batch(prompts, generation_config=config)
    assert [got[f"req_{i}"].generated_tokens for i in range(len(prompts))] == want
    manager = model.init_continuous_batching(generation_config=config)
    manager.start()
    try:
        rid = manager.add_request(prompts[0], max_new_tokens=8)
        result = manager.get_result(rid, timeout=60)
    finally:
        manager.stop(block=True)
    assert result.generated_tokens == want[0]


def test_invalid_config_raises_value_error_naming_the_field(models):
    model = models("llama")
    with pytest.raises(ValueError, match="top_p"):
        model.generate([[1, 2, 3]], do_sample=True, top_p=1.5, max_new_tokens=2)
    with pytest.raises(ValueError, match="num_beams"):
        lmgen.GenerationConfig(num_beams="three")
    with pytest.raises(ValueError, match="not_a_field"):
        model.generate([[1, 2, 3]], not_a_field=1)


def test_bad_inputs_raise_value_error(models):
    model = models("llama")
    with pytest.raises(ValueError, match="input_ids"):
        model.generate([[1, 2], [3]], max_new_tokens=2)
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate([[10**6]], max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate([[1, 2]], attention_mask=[[1]], max_new_tokens=2)


def test_missing_checkpoint_raises_os_error(tmp_path):
    with pytest.raises(OSError):
        lmgen.AutoModelForCausalLM.from_pretrained(str(tmp_path / "nothing-here"))


def test_python_exceptions_propagate_from_callbacks(models):
    model = models("llama")

    def boom(input_ids, scores):
        raise ZeroDivisionError("from the processor")

    with pytest.raises(ZeroDivisionError, match="from the processor"):
        model.generate([[1, 2, 3]], logits_processor=[boom], max_new_tokens=2)

    def bad_shape(input_ids, scores):
        return scores[:, :3]

    with pytest.raises(ValueError, match="shape"):
        model.generate([[1, 2, 3]], logits_processor=[bad_shape], max_new_tokens=2)

    def stop_boom(input_ids, scores):
        raise KeyError("from the criterion")

    with pytest.raises(KeyError, match="from the criterion"):
        model.generate([[1, 2, 3]], stopping_criteria=[stop_boom], max_new_tokens=2)


def test_generate_releases_the_gil():
    # While generate() runs on another thread, this thread keeps running Python at a good part of
    # its usual rate. With the GIL held for the whole call, `thread.start()` (which waits for the
    # new thread to signal that it started) returns only after generate() is done, so this
    # thread sees it finished at once (checked with a GIL-holding C call, re's backtracking).
    import os
    import time

    austen = os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "tiny-austen")
    model = lmgen.AutoModelForCausalLM.from_pretrained(austen)
    ids = [model.tokenizer.encode("It is a truth universally acknowledged")]
    done = threading.Event()

    def spin_until(stop):
        n, start = 0, time.perf_counter()
        while not stop():
            n += 1
        return n / (time.perf_counter() - start), time.perf_counter() - start

    deadline = time.perf_counter() + 0.2
    alone, _ = spin_until(lambda: time.perf_counter() > deadline or done.is_set())

    def run():
        model.generate(ids, do_sample=False, max_new_tokens=64, min_new_tokens=64)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    during, elapsed = spin_until(lambda: time.perf_counter() < 0 or done.is_set())
    thread.join()
    assert elapsed > 0.1, f"generate() ran only {elapsed:.3f} s beside this thread: GIL held?"
    assert during > 0.05 * alone, f"{during:.0f} loops/s beside generate(), {alone:.0f} alone"
