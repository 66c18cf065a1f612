"""The one wire codec of Tensor messages, shared by the server and the client."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecl import tensors
from sparsecl.v1 import sparsecl_pb2 as pb


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int64", "int32", "float64"])
def test_every_dtype_round_trips_bit_for_bit(dtype: str) -> None:
    x = (np.random.default_rng(0).standard_normal((3, 4)) * 100).astype(dtype)
    assert tensors.decode(tensors.encode(x)).tobytes() == x.tobytes()


def test_big_endian_arrays_are_sent_little_endian() -> None:
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    message = tensors.encode(x)
    assert message.data == x.astype("<f4").tobytes()
    assert np.array_equal(tensors.decode(message), x)


def test_an_unsupported_dtype_is_refused() -> None:
    with pytest.raises(tensors.TensorError, match="complex128"):
        tensors.encode(np.zeros(2, np.complex128))


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (pb.Tensor(shape=[2], dtype=99, data=b"\0\0"), "dtype"),  # type: ignore[arg-type]
        (pb.Tensor(shape=[], dtype=pb.DTYPE_UINT8, data=b""), "dimensions"),
        (pb.Tensor(shape=[1] * 9, dtype=pb.DTYPE_UINT8, data=b"\0"), "dimensions"),
        (pb.Tensor(shape=[2**63 - 1, 0], dtype=pb.DTYPE_UINT8, data=b""), "sizes"),
        (pb.Tensor(shape=[-1], dtype=pb.DTYPE_UINT8, data=b""), "sizes"),
        (pb.Tensor(shape=[3], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 8), "needs 12"),
    ],
)
def test_a_malformed_message_names_what_is_off(message: pb.Tensor, says: str) -> None:
    with pytest.raises(tensors.TensorError, match=says):
        tensors.decode(message, "x")
