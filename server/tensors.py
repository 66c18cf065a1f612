"""Tensor messages to and from arrays for the server: the shared codec, with a malformed
message as InvalidInputError (INVALID_ARGUMENT); server/inputs.py checks what they hold."""

from __future__ import annotations

import numpy as np

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
