"""Tensors in and out: lmgen answers in the kind it was given (torch tensors, NumPy arrays or
lists). torch is imported only when the caller already passed a torch tensor or asked for one."""

import numpy as np

LIST, NUMPY, TORCH = "list", "numpy", "torch"


def kind_of(x):
    """Which kind `x` is: a torch tensor, a NumPy array, or anything else (lists)."""
    if type(x).__module__.startswith("torch"):
        return TORCH
    if isinstance(x, np.ndarray):
        return NUMPY
    return LIST


def torch_module():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "return_tensors='pt' needs torch (pip install torch); use 'np' or None without it"
        ) from e
    return torch


def to_numpy(x):
    """Any array-like (torch tensor, NumPy array, nested lists) as a NumPy array."""
    if kind_of(x) == TORCH:
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_rows(x, name):
    """`[b, t]` (or `[t]`) integers as a list of rows of Python ints."""
    if x is None:
        return None
    if kind_of(x) == LIST:
        # Lists go to lmgen as they are: it checks the shape (ragged rows, empty prompts).
        x = list(x)
        if not x or not isinstance(x[0], (list, tuple)) and not hasattr(x[0], "__len__"):
            x = [x]
        try:
            return [[int(t) for t in row] for row in x]
        except (TypeError, ValueError) as e:
            raise ValueError(f"`{name}` must hold integers: {e}") from e
    a = to_numpy(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"`{name}` must have shape [batch, length], got {list(a.shape)}")
    if a.size and not np.issubdtype(a.dtype, np.integer) and not np.issubdtype(a.dtype, np.bool_):
        raise ValueError(f"`{name}` must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64).tolist()


def convert(a, kind):
    """A NumPy array as `kind`."""
    if kind == TORCH:
        return torch_module().from_numpy(np.ascontiguousarray(a))
    if kind == NUMPY:
        return a
    return a.tolist()
