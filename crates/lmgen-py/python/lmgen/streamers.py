"""transformers' streamers. `TextIteratorStreamer` is lmgen's own (Rust) streamer: generate() feeds
it without the GIL and the iterator waits without it, so `for text in streamer` runs on another
thread while generate() runs, as in transformers. Any other object with `put(ids)` / `end()` works
as a streamer too (called with the GIL, once per step)."""

import queue

import numpy as np

from . import _lmgen
from ._tensors import convert


class TextIteratorStreamer:
    """`TextIteratorStreamer(tokenizer, skip_prompt=False, timeout=None, skip_special_tokens=...)`."""

    def __init__(self, tokenizer, skip_prompt=False, timeout=None, **decode_kwargs):
        skip_special = bool(decode_kwargs.pop("skip_special_tokens", False))
        decode_kwargs.pop("clean_up_tokenization_spaces", None)
        if decode_kwargs:
            raise ValueError(f"unsupported decode kwargs {sorted(decode_kwargs)}")
        self._native = _lmgen.NativeTextIteratorStreamer(
            tokenizer._native, bool(skip_prompt), skip_special, timeout
        )
        self.timeout = timeout

    def __iter__(self):
        return self

    def __next__(self):
        chunk = self._native.next_chunk()
        if chunk is None:
            if self._native.timed_out():
                raise queue.Empty()
            raise StopIteration()
        return chunk


class _PutAdapter:
    """A Python streamer given the kind of tensors transformers would give it (prompt `[1, t]`,
    then each step's `[1]` tokens)."""

    def __init__(self, streamer, kind):
        self.streamer, self.kind, self.first = streamer, kind, True

    def put(self, tokens):
        a = np.asarray(tokens, dtype=np.int64)
        if self.first:
            a, self.first = a[None, :], False
        self.streamer.put(convert(a, self.kind))

    def end(self):
        self.streamer.end()
