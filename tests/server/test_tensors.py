"""Tensors on the wire: raw little-endian bytes, decoded, then validated as the data plane's
inputs and labels (server.inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server import inputs, tensors
from sparse_engine.errors import InvalidInputError
from sparsecl.v1 import sparsecl_pb2 as pb


def test_float32_round_trips_bit_for_bit() -> None:
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    assert tensors.from_proto(tensors.to_proto(x), "x").tobytes() == x.tobytes()


def test_big_endian_arrays_are_sent_little_endian() -> None:
    x = np.arange(4, dtype=">i8")
    message = tensors.to_proto(x)
    assert message.data == np.arange(4, dtype="<i8").tobytes()


def test_uint8_inputs_are_scaled_by_1_over_255() -> None:
    x = np.array([[0, 255, 51]], dtype=np.uint8)
    decoded = tensors.from_proto(tensors.to_proto(x), "x")
    assert torch.allclose(inputs.batch(decoded), torch.tensor([[0.0, 1.0, 0.2]]))


def test_float64_inputs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="float32 or uint8"):
        inputs.batch(tensors.from_proto(tensors.to_proto(np.zeros((1, 3))), "x"))


def test_byte_count_must_match_shape() -> None:
    bad = pb.Tensor(shape=[2, 2], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 12)
    with pytest.raises(InvalidInputError, match="16"):
        tensors.from_proto(bad, "x")


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="dtype"):
        tensors.from_proto(pb.Tensor(shape=[1], dtype=99, data=b"\0"), "x")  # type: ignore[arg-type]


def test_labels_must_be_a_vector_of_integers() -> None:
    with pytest.raises(InvalidInputError, match="int64 or int32"):
        inputs.labels(tensors.from_proto(tensors.to_proto(np.zeros(3, np.float32)), "y"))
