"""Tensors on the wire (shape + dtype + raw little-endian bytes) to and from numpy/torch."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sparse_engine.errors import InvalidInputError
from sparsecl.v1 import sparsecl_pb2 as pb

DTYPES: dict[int, np.dtype] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_UINT8: np.dtype("u1"),
    pb.DTYPE_INT64: np.dtype("<i8"),
    pb.DTYPE_INT32: np.dtype("<i4"),
    pb.DTYPE_FLOAT64: np.dtype("<f8"),
}
MAX_DIMS = 8  # an input is N × at most 7 dimensions
MAX_DIM = 2**31 - 1  # no size beyond what a message could carry
CODES: dict[str, int] = {dtype.str.lstrip("<|"): code for code, dtype in DTYPES.items()}


def to_proto(array: np.ndarray) -> pb.Tensor:
    """A numpy array as a Tensor message (converted to little-endian, C order)."""
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    key = dtype.str.lstrip("<|=")
    if key not in CODES:
        raise InvalidInputError(f"cannot send arrays of dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype=DTYPES[CODES[key]])
    return pb.Tensor(shape=list(data.shape), dtype=CODES[key], data=data.tobytes())  # type: ignore[arg-type]


def from_proto(tensor: pb.Tensor, what: str) -> np.ndarray:
    """The array a Tensor message holds; InvalidInputError names ``what`` when it is malformed."""
    if tensor.dtype not in DTYPES:
        names = ", ".join(pb.DType.Name(c) for c in DTYPES)
        raise InvalidInputError(f"{what}: dtype {tensor.dtype} is not one of {names}")
    shape = tuple(int(s) for s in tensor.shape)
    if not 0 < len(shape) <= MAX_DIMS:
        raise InvalidInputError(
            f"{what}: shape must have 1 to {MAX_DIMS} dimensions, got {len(shape)}"
        )
    if any(not 0 <= s <= MAX_DIM for s in shape):
        raise InvalidInputError(
            f"{what}: shape {list(shape)} must hold sizes in 0..{MAX_DIM} (non-negative)"
        )
    dtype = DTYPES[tensor.dtype]
    want = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != want:
        raise InvalidInputError(
            f"{what}: {len(tensor.data)} bytes of data, but shape {list(shape)} of "
            f"{pb.DType.Name(tensor.dtype)} needs {want}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


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
