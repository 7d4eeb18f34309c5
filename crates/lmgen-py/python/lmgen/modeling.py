"""`AutoModelForCausalLM`: a checkpoint loaded by lmgen, with transformers' `generate()`,
`compute_transition_scores`, `generate_batch` and `init_continuous_batching`."""

import json
import os
from types import SimpleNamespace

import numpy as np

from . import _lmgen
from ._tensors import LIST, NUMPY, TORCH, convert, kind_of, to_numpy, to_rows
from .generation_config import GenerationConfig, _jsonable
from .outputs import (
    GenerateBeamDecoderOnlyOutput,
    GenerateBeamEncoderDecoderOutput,
    GenerateDecoderOnlyOutput,
    GenerateEncoderDecoderOutput,
)
from .processors import criterion_adapter, processor_adapter
from .streamers import TextIteratorStreamer, _PutAdapter
from .tokenization import PreTrainedTokenizer

# generate() arguments transformers has that lmgen's Python API does not take yet.
_NOT_SUPPORTED = ("prefix_allowed_tokens_fn", "negative_prompt_ids",
                  "negative_prompt_attention_mask", "custom_generate", "synced_gpus")


class LmgenModelForCausalLM:
    """A loaded causal LM (what `AutoModelForCausalLM.from_pretrained` returns)."""

    def __init__(self, native, name_or_path, device):
        self._native = native
        self.name_or_path = name_or_path
        self.device = device
        self.generation_config = GenerationConfig.from_pretrained(native.dir)
        self.config = _read_config(native.dir)

    def __repr__(self):
        return f"LmgenModelForCausalLM({self.name_or_path!r}, device={self.device!r})"

    # transformers idioms that are no-ops here.
    def eval(self):
        return self

    def to(self, device):
        if str(device) != self.device:
            raise ValueError(
                f"lmgen places the model at load time: pass `device={str(device)!r}` to "
                f"from_pretrained (this model is on {self.device!r})"
            )
        return self

    @property
    def tokenizer(self):
        """The checkpoint's tokenizer, already loaded with the model."""
        return PreTrainedTokenizer(self._native.tokenizer, self.name_or_path)

    def generate(self, inputs=None, generation_config=None, logits_processor=None,
                 stopping_criteria=None, assistant_model=None, streamer=None, *,
                 input_ids=None, attention_mask=None, seed=None, tokenizer=None,
                 assistant_tokenizer=None, decoder_input_ids=None, input_features=None,
                 **kwargs):
        """transformers' `generate()`. Returns the sequences (`[b, t]`) or, with
        `return_dict_in_generate=True`, a `GenerateDecoderOnlyOutput` /
        `GenerateBeamDecoderOnlyOutput` (`GenerateEncoderDecoderOutput` /
        `GenerateBeamEncoderDecoderOutput` for an encoder-decoder model); in the kind of
        `input_ids` (torch, NumPy, lists). `seed` seeds sampling (lmgen has no global RNG).
        Encoder-decoder models read `input_ids` as the encoder's input (or `input_features`,
        `[b, n_mels, frames]`, for audio) and may take `decoder_input_ids`."""
        for name in _NOT_SUPPORTED:
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"`{name}` is not supported by lmgen's Python API yet")
        if inputs is not None and input_ids is not None:
            raise ValueError("`inputs` and `input_ids` were both passed: pass one")
        ids = inputs if inputs is not None else input_ids
        features = None
        if input_features is not None:
            if ids is not None:
                raise ValueError("pass either `input_ids` or `input_features`, not both")
            array = np.ascontiguousarray(to_numpy(input_features), dtype=np.float32)
            if array.ndim != 3:
                raise ValueError(f"`input_features` must be [batch, n_mels, frames], got shape {array.shape}")
            features = (array.tobytes(), tuple(int(d) for d in array.shape))
        elif ids is None:
            raise ValueError("`input_ids` is required (lmgen generates from a prompt)")
        kind = kind_of(ids if ids is not None else input_features)
        overrides = generation_config.to_dict() if generation_config is not None else {}
        overrides.update(kwargs)
        config_json = json.dumps(overrides, default=_jsonable)
        # Callbacks get arrays they can index like transformers' tensors: torch ones when the
        # inputs were torch tensors, else NumPy ones (also for list inputs).
        cb_kind = TORCH if kind == TORCH else NUMPY
        processors = [processor_adapter(p, cb_kind) for p in (logits_processor or [])]
        criteria = [criterion_adapter(c, cb_kind) for c in (stopping_criteria or [])]
        if isinstance(streamer, TextIteratorStreamer):
            native_streamer = streamer._native
        elif streamer is not None:
            native_streamer = _PutAdapter(streamer, cb_kind)
        else:
            native_streamer = None
        out = self._native.generate(
            to_rows(ids, "input_ids") if ids is not None else None,
            to_rows(attention_mask, "attention_mask"),
            config_json,
            seed,
            processors,
            criteria,
            native_streamer,
            assistant_model._native if assistant_model is not None else None,
            to_rows(decoder_input_ids, "decoder_input_ids"),
            features,
        )
        return self._output(out, overrides, kind)

    def _resolved(self, overrides, name):
        value = overrides.get(name)
        return value if value is not None else getattr(self.generation_config, name)

    def _output(self, out, overrides, kind):
        sequences = convert(np.asarray(out["sequences"], dtype=np.int64), kind)
        if not self._resolved(overrides, "return_dict_in_generate"):
            return sequences
        fields = {"sequences": sequences}
        for name in ("scores", "logits"):
            if name in out:
                rows, vocab = out[name + "_shape"]
                steps = np.frombuffer(out[name], dtype=np.float32).reshape(-1, rows, vocab)
                fields[name] = tuple(convert(s.copy(), kind) for s in steps)
        encoder_decoder = self._native.is_encoder_decoder
        # Per step, one array per layer (the decoder's for an encoder-decoder model), as
        # transformers' tuples of tuples.
        for name in ("hidden_states", "attentions"):
            if name in out:
                key = f"decoder_{name}" if encoder_decoder else name
                fields[key] = tuple(
                    tuple(convert(np.frombuffer(data, dtype=np.float32).reshape(shape).copy(), kind)
                          for data, shape in step)
                    for step in out[name])
        beam = out["sequences_scores"] is not None or out["beam_indices"] is not None
        if not beam:
            if encoder_decoder:
                return GenerateEncoderDecoderOutput(**fields)
            return GenerateDecoderOnlyOutput(**fields)
        if out["sequences_scores"] is not None:
            fields["sequences_scores"] = convert(
                np.asarray(out["sequences_scores"], dtype=np.float32), kind)
        if out["beam_indices"] is not None:
            fields["beam_indices"] = convert(np.asarray(out["beam_indices"], dtype=np.int64), kind)
        if encoder_decoder:
            return GenerateBeamEncoderDecoderOutput(**fields)
        return GenerateBeamDecoderOnlyOutput(**fields)

    def compute_transition_scores(self, sequences, scores, beam_indices=None,
                                  normalize_logits=False):
        """transformers' `compute_transition_scores`: `[b, steps]` scores of the chosen tokens."""
        kind = kind_of(sequences)
        steps = np.stack([to_numpy(s).astype(np.float32) for s in scores])
        _, rows, vocab = steps.shape
        out = self._native.compute_transition_scores(
            to_rows(sequences, "sequences"),
            np.ascontiguousarray(steps).tobytes(),
            rows,
            vocab,
            to_rows(beam_indices, "beam_indices"),
            bool(normalize_logits),
        )
        return convert(np.asarray(out, dtype=np.float32), kind)

    def generate_batch(self, inputs, generation_config=None, seed=None, num_blocks=None,
                       max_batch_tokens=None, progress_bar=False, **kwargs):
        """transformers' `generate_batch(inputs, generation_config)`: prompts of any lengths
        through the continuous-batching engine. Returns `{"req_i": {"prompt_ids",
        "generated_tokens"}}` as lists, in order."""
        overrides = generation_config.to_dict() if generation_config is not None else {}
        overrides.update(kwargs)
        rows = [[int(t) for t in to_numpy(p).reshape(-1)] for p in inputs]
        outs = self._native.generate_batch(
            rows, json.dumps(overrides, default=_jsonable), seed, num_blocks, max_batch_tokens)
        return {
            f"req_{i}": SimpleNamespace(request_id=f"req_{i}", prompt_ids=p, generated_tokens=g)
            for i, (p, g) in enumerate(zip(rows, outs))
        }

    def init_continuous_batching(self, generation_config=None, num_blocks=None,
                                 max_batch_tokens=None, **kwargs):
        """transformers' `init_continuous_batching()`: a `ContinuousBatchingManager` (call
        `start()`, `add_request(input_ids, max_new_tokens=...)`, `get_result()`, `stop()`)."""
        overrides = generation_config.to_dict() if generation_config is not None else {}
        overrides.update(kwargs)
        return ContinuousBatchingManager(_lmgen.NativeManager(
            self._native, json.dumps(overrides, default=_jsonable), num_blocks, max_batch_tokens))


class ContinuousBatchingManager:
    """transformers' `ContinuousBatchingManager` over lmgen's engine (a worker thread)."""

    def __init__(self, native):
        self._native = native

    def start(self):
        self._native.start()

    def is_running(self):
        return self._native.is_running()

    def add_request(self, input_ids, request_id=None, max_new_tokens=None, seed=None):
        ids = [int(t) for t in to_numpy(input_ids).reshape(-1)]
        return self._native.add_request(ids, request_id, max_new_tokens, seed)

    def cancel_request(self, request_id):
        self._native.cancel_request(request_id)

    def get_result(self, request_id=None, timeout=None):
        out = self._native.get_result(request_id, timeout)
        return None if out is None else SimpleNamespace(**out)

    def stop(self, block=True, timeout=None):
        self._native.stop(block, timeout)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class AutoModelForCausalLM:
    """transformers' `AutoModelForCausalLM.from_pretrained(path_or_id, dtype=..., device=...,
    quantize=...)`. `dtype` takes torch dtypes or their names ("auto": the checkpoint's);
    `device` "cpu", "cuda" or "cuda:N" (`device_map` is read as a device name); `quantize`
    "q8_0" or "q4_k" (lmgen's own quantization)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, dtype=None, torch_dtype=None,
                        device=None, device_map=None, quantize=None, attn_implementation=None,
                        **kwargs):
        kwargs.pop("trust_remote_code", None)
        if kwargs:
            raise ValueError(f"from_pretrained() got arguments lmgen does not take: {sorted(kwargs)}")
        dtype = dtype if dtype is not None else torch_dtype
        if device is None and isinstance(device_map, str) and device_map != "auto":
            device = device_map
        device = str(device) if device is not None else "cpu"
        path = str(pretrained_model_name_or_path)
        native = _lmgen.NativeModel(path, None if dtype is None else str(dtype), device, quantize,
                                    attn_implementation)
        return LmgenModelForCausalLM(native, path, device)


class AutoModelForSeq2SeqLM(AutoModelForCausalLM):
    """transformers' `AutoModelForSeq2SeqLM.from_pretrained`: an encoder-decoder checkpoint (T5,
    BART, Marian); the same arguments as `AutoModelForCausalLM`. `generate(input_ids=...)` reads
    the ids as the encoder's input."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if not model._native.is_encoder_decoder:
            raise ValueError(f"`{pretrained_model_name_or_path}` is not an encoder-decoder model: "
                             "load it with AutoModelForCausalLM")
        return model


class AutoModelForSpeechSeq2Seq(AutoModelForSeq2SeqLM):
    """transformers' `AutoModelForSpeechSeq2Seq.from_pretrained` (Whisper): `generate(input_features=...)`
    with a `[b, n_mels, frames]` log-mel array."""


def _read_config(directory):
    try:
        with open(os.path.join(directory, "config.json")) as f:
            return SimpleNamespace(**json.load(f))
    except (OSError, ValueError):
        return SimpleNamespace()
