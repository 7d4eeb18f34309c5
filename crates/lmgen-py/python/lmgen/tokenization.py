"""`AutoTokenizer`: lmgen's tokenizer (the checkpoint's `tokenizer.json`, special tokens and chat
template) behind transformers' call / encode / decode / batch_decode / apply_chat_template."""

import json

import numpy as np

from . import _lmgen
from ._tensors import LIST, NUMPY, TORCH, convert, to_numpy


class BatchEncoding(dict):
    """transformers' `BatchEncoding`: a dict with attribute access and `.to(device)`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def to(self, device):
        return BatchEncoding(
            {k: (v.to(device) if hasattr(v, "to") else v) for k, v in self.items()}
        )


_KINDS = {None: LIST, "np": NUMPY, "pt": TORCH}


class PreTrainedTokenizer:
    """A loaded tokenizer (`AutoTokenizer.from_pretrained`)."""

    def __init__(self, native, name_or_path, padding_side="right"):
        self._native = native
        self.name_or_path = name_or_path
        if padding_side not in ("left", "right"):
            raise ValueError(f"`padding_side` must be 'left' or 'right', got {padding_side!r}")
        self.padding_side = padding_side
        self._pad_token_id = native.pad_token_id

    # Special tokens.
    @property
    def eos_token_id(self):
        return self._native.eos_token_id

    @property
    def bos_token_id(self):
        return self._native.bos_token_id

    @property
    def pad_token_id(self):
        return self._pad_token_id

    @pad_token_id.setter
    def pad_token_id(self, value):
        self._pad_token_id = value

    @property
    def eos_token(self):
        i = self.eos_token_id
        return None if i is None else self._native.id_to_token(i)

    @property
    def bos_token(self):
        i = self.bos_token_id
        return None if i is None else self._native.id_to_token(i)

    @property
    def pad_token(self):
        i = self.pad_token_id
        return None if i is None else self._native.id_to_token(i)

    @pad_token.setter
    def pad_token(self, token):
        """`tokenizer.pad_token = tokenizer.eos_token`."""
        i = self._native.token_to_id(token)
        if i is None:
            raise ValueError(f"`pad_token` {token!r} is not in the vocabulary")
        self._pad_token_id = i

    @property
    def vocab_size(self):
        return self._native.vocab_size

    def __len__(self):
        return self._native.vocab_size

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._native.token_to_id(tokens)
        return [self._native.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._native.id_to_token(ids)
        return [self._native.id_to_token(int(i)) for i in ids]

    # Encoding.
    def encode(self, text, add_special_tokens=True, return_tensors=None):
        ids = self._native.encode(text, add_special_tokens)
        if return_tensors is None:
            return ids
        return convert(np.asarray([ids], dtype=np.int64), _kind(return_tensors))

    def __call__(self, text, add_special_tokens=True, padding=False, return_tensors=None,
                 return_attention_mask=True):
        """`tokenizer(text or [texts], padding=..., return_tensors=None|'np'|'pt')`."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        rows = [self._native.encode(t, add_special_tokens) for t in texts]
        kind = _kind(return_tensors)
        lengths = {len(r) for r in rows}
        if padding or (kind != LIST and len(lengths) > 1):
            if not padding:
                raise ValueError(
                    "Unable to create tensor, you should probably activate padding with "
                    "'padding=True' to have batched tensors with the same length."
                )
            if self.pad_token_id is None:
                raise ValueError(
                    "Asking to pad but the tokenizer does not have a padding token. Please select "
                    "a token to use as `pad_token` `(tokenizer.pad_token = tokenizer.eos_token e.g.)`"
                )
            width = max(lengths)
            ids, mask = [], []
            for r in rows:
                pad = [self.pad_token_id] * (width - len(r))
                ones, zeros = [1] * len(r), [0] * (width - len(r))
                if self.padding_side == "left":
                    ids.append(pad + r)
                    mask.append(zeros + ones)
                else:
                    ids.append(r + pad)
                    mask.append(ones + zeros)
        else:
            ids, mask = rows, [[1] * len(r) for r in rows]
        if kind == LIST:
            out = {"input_ids": ids[0] if single else ids}
            if return_attention_mask:
                out["attention_mask"] = mask[0] if single else mask
            return BatchEncoding(out)
        out = {"input_ids": convert(np.asarray(ids, dtype=np.int64), kind)}
        if return_attention_mask:
            out["attention_mask"] = convert(np.asarray(mask, dtype=np.int64), kind)
        return BatchEncoding(out)

    # Decoding.
    def decode(self, token_ids, skip_special_tokens=False, **kwargs):
        ids = to_numpy(token_ids).reshape(-1).astype(np.int64).tolist()
        return self._native.decode(ids, skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens=False, **kwargs):
        return [self.decode(row, skip_special_tokens) for row in sequences]

    def apply_chat_template(self, conversation, tools=None, documents=None,
                            add_generation_prompt=False, tokenize=True, return_tensors=None,
                            return_dict=False, **kwargs):
        extra = dict(kwargs)
        if tools is not None:
            extra["tools"] = tools
        if documents is not None:
            extra["documents"] = documents
        text = self._native.apply_chat_template(
            json.dumps(conversation), add_generation_prompt, json.dumps(extra)
        )
        if not tokenize:
            return text
        enc = self(text, add_special_tokens=False, return_tensors=return_tensors)
        return enc if return_dict else enc["input_ids"]


def _kind(return_tensors):
    if return_tensors not in _KINDS:
        raise ValueError(f"`return_tensors` must be None, 'np' or 'pt', got {return_tensors!r}")
    return _KINDS[return_tensors]


class AutoTokenizer:
    """transformers' `AutoTokenizer.from_pretrained(path_or_id, padding_side=...)`."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, padding_side=None, **kwargs):
        path = str(pretrained_model_name_or_path)
        native = _lmgen.NativeTokenizer(path)
        side = padding_side or _config_padding_side(path) or "right"
        return PreTrainedTokenizer(native, path, side)


def _config_padding_side(path):
    import os

    try:
        with open(os.path.join(path, "tokenizer_config.json")) as f:
            return json.load(f).get("padding_side")
    except (OSError, ValueError):
        return None
