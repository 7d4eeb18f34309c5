"""User logits processors and stopping criteria: any Python callable with transformers'
signature, called once per step by the Rust generation loop (which takes the GIL for the call).

- `logits_processor(input_ids [b, t] int64, scores [b, vocab] float32) -> scores`: called with
  torch tensors when the inputs were torch tensors, else NumPy arrays (also for list inputs). It runs after lmgen's
  built-in processors and before the sampling warpers, as transformers runs a user processor.
- `stopping_criteria(input_ids, scores) -> bool or [b] bools`: lmgen checks each row on its own,
  so it is called with that row's `[1, t]` tokens and `scores=None` (a documented difference).
"""

import numpy as np

from ._tensors import convert


class LogitsProcessor:
    """Base class (transformers' `LogitsProcessor`): subclass and implement `__call__`."""

    def __call__(self, input_ids, scores):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")


class LogitsProcessorList(list):
    """A list of processors (each is passed to lmgen in order)."""


class StoppingCriteria:
    """Base class (transformers' `StoppingCriteria`): subclass and implement `__call__`."""

    def __call__(self, input_ids, scores, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")


class StoppingCriteriaList(list):
    """A list of criteria."""


def processor_adapter(processor, kind):
    """`processor` as the native callback `(rows, f32 bytes, b, vocab) -> f32 bytes`."""

    def call(rows, scores, batch, vocab):
        ids = convert(np.asarray(rows, dtype=np.int64), kind)
        x = np.frombuffer(scores, dtype=np.float32).reshape(batch, vocab).copy()
        out = processor(ids, convert(x, kind))
        out = _numpy(out)
        if out.shape != (batch, vocab):
            raise ValueError(
                f"logits processor {type(processor).__name__} returned shape {list(out.shape)}; "
                f"expected [{batch}, {vocab}]"
            )
        return np.ascontiguousarray(out, dtype=np.float32).tobytes()

    return call


def criterion_adapter(criterion, kind):
    """`criterion` as the native per-row callback `(tokens) -> bool`."""

    def call(tokens):
        ids = convert(np.asarray([tokens], dtype=np.int64), kind)
        out = criterion(ids, None)
        return bool(np.any(_numpy(out)))

    return call


def _numpy(x):
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)
