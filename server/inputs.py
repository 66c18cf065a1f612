"""The arrays the data plane accepts, whatever transport sent them: model inputs (uint8,
scaled by 1/255, or finite float32) and integer labels; anything else is InvalidInputError.
Stricter than the library's rules for user arrays (sparse_engine.arrays), which convert
other floats and whole-number labels: a server does not guess what a client meant. The
conversion itself is the library's (``sparse_engine.data.as_inputs``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sparse_engine.arrays import check_finite, describe, to_numpy
from sparse_engine.data import as_inputs
from sparse_engine.errors import InvalidInputError

ArrayLike = np.ndarray | Tensor


def sent(value: ArrayLike, what: str = "x") -> np.ndarray:
    """Model inputs as sent (no copy, not yet checked finite): uint8 or float32."""
    array = to_numpy(value)
    if array.dtype != np.float32 and array.dtype != np.uint8:
        raise InvalidInputError(
            f"{what} must be float32 or uint8 (scaled by 1/255), got {describe(value)}"
        )
    return array


def raw_inputs(value: ArrayLike, what: str = "x") -> np.ndarray:
    """Model inputs as sent (no copy): uint8, or float32 checked finite."""
    array = sent(value, what)
    check_finite(array, what)
    return array


def batch_array(value: ArrayLike, what: str = "x") -> np.ndarray:
    """A batch of model inputs as sent (no copy; converted and checked finite by whoever
    takes it, ``as_inputs``): uint8 or float32, N × features with N >= 1."""
    array = sent(value, what)
    if array.ndim < 2 or array.shape[0] == 0:
        raise InvalidInputError(
            f"{what} of shape {list(array.shape)} holds no batch: send N × features with N >= 1"
        )
    return array


def batch(value: ArrayLike, what: str = "x") -> Tensor:
    """A batch of model inputs as float32 (``as_inputs``: a writable copy of a message's
    bytes, uint8 scaled by 1/255, checked finite)."""
    return as_inputs(batch_array(value, what), what)


def labels(value: ArrayLike, what: str = "y") -> Tensor:
    """Integer labels as an int64 vector."""
    array = to_numpy(value)
    if array.dtype.kind != "i":
        raise InvalidInputError(f"{what} must hold int64 or int32 labels, got {describe(value)}")
    if array.ndim != 1:
        raise InvalidInputError(f"{what} must be a vector of labels, got {describe(value)}")
    return torch.from_numpy(array.astype(np.int64))
