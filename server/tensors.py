"""Request tensors as model inputs and labels: the shared codec, plus the server's checks."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sparse_engine.errors import InvalidInputError
from sparsecl import tensors as codec
from sparsecl.v1 import sparsecl_pb2 as pb


def to_proto(array: np.ndarray) -> pb.Tensor:
    """A numpy array as a Tensor message (the shared codec)."""
    return codec.encode(array)


def from_proto(tensor: pb.Tensor, what: str) -> np.ndarray:
    """The array a Tensor message holds; InvalidInputError names ``what`` when it is malformed."""
    try:
        return codec.decode(tensor, what)
    except codec.TensorError as e:
        raise InvalidInputError(str(e)) from None


def raw_inputs(tensor: pb.Tensor, what: str = "x") -> np.ndarray:
    """Model inputs as sent (a read-only view): uint8, or float32 checked finite."""
    array = from_proto(tensor, what)
    if array.dtype == np.float32:
        if not bool(np.isfinite(array).all()):
            raise InvalidInputError(f"{what} holds NaN or Inf values")
        return array
    if array.dtype == np.uint8:
        return array
    raise InvalidInputError(
        f"{what} must be float32 or uint8 (scaled by 1/255), got {pb.DType.Name(tensor.dtype)}"
    )


def inputs(tensor: pb.Tensor, what: str = "x") -> Tensor:
    """Model inputs: float32 as they are, uint8 scaled by 1/255; any other dtype is refused."""
    array = raw_inputs(tensor, what)
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    return torch.from_numpy(array.astype(np.float32))  # a writable, native-endian copy


def batch(tensor: pb.Tensor, what: str = "x") -> Tensor:
    """A batch of model inputs: like ``inputs``, and N × features with N >= 1."""
    x = inputs(tensor, what)
    if x.ndim < 2 or x.shape[0] == 0:
        raise InvalidInputError(
            f"{what} of shape {list(x.shape)} holds no batch: send N × features with N >= 1"
        )
    return x


def labels(tensor: pb.Tensor, what: str = "y") -> Tensor:
    """Integer labels as an int64 vector."""
    array = from_proto(tensor, what)
    if array.dtype.kind != "i":
        raise InvalidInputError(f"{what} must hold int64 or int32 labels, got {array.dtype}")
    if array.ndim != 1:
        raise InvalidInputError(f"{what} must be a vector of labels, got shape {list(array.shape)}")
    return torch.from_numpy(array.astype(np.int64))
