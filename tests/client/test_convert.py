"""The client's data adapters: numpy, torch, Avalanche and .npz files become wire arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from client import convert
from sparse_engine.mnist import Mnist


def test_torch_tensors_become_numpy_float32_and_int64() -> None:
    x, y = convert.examples((torch.rand(4, 784, dtype=torch.float64), torch.tensor([1, 2, 1, 2])))
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (4, 784)


def test_uint8_inputs_are_sent_as_uint8() -> None:
    x, _ = convert.examples((np.zeros((2, 28, 28), np.uint8), [0, 1]))
    assert x.dtype == np.uint8


def test_integer_inputs_other_than_uint8_are_refused() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        convert.inputs(np.zeros((2, 3), np.int32))


def test_avalanche_experience_gives_its_examples(mnist: Mnist) -> None:
    from avalanche.benchmarks import tensors_benchmark

    x = torch.from_numpy(mnist.x_train[:40]).float().unsqueeze(1) / 255
    y = torch.from_numpy(mnist.y_train[:40])
    bench = tensors_benchmark(
        train_tensors=[(x[:20], y[:20]), (x[20:], y[20:])],
        test_tensors=[(x[:20], y[:20])],
        task_labels=[0, 1],
    )
    got_x, got_y = convert.examples(bench.train_stream[1])
    assert np.array_equal(got_x, x[20:].numpy()) and np.array_equal(got_y, y[20:].numpy())


def test_npz_without_labels_is_refused_where_labels_are_needed(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 784), np.float32))
    with pytest.raises(KeyError, match="'y'"):
        convert.load_npz(tmp_path / "x.npz")
    x, y = convert.load_npz(tmp_path / "x.npz", need_labels=False)
    assert x.shape == (2, 784) and y is None


def test_chunks_stay_under_the_byte_limit() -> None:
    parts = list(convert.chunks(10, row_bytes=100, limit=350))
    assert [p.stop - p.start for p in parts] == [3, 3, 3, 1]


def test_tensor_message_round_trips() -> None:
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert np.array_equal(convert.array(convert.tensor(a)), a)


@pytest.mark.parametrize(
    "y",
    [
        np.array([0, 2**63], dtype=np.uint64),
        np.array([0.0, 1e19]),
        np.array([0.0, -1e19]),
    ],
    ids=["uint64-past-int64", "float-past-int64", "float-below-int64"],
)
def test_labels_past_int64_are_refused_not_wrapped(y: np.ndarray) -> None:
    with pytest.raises(ValueError, match="int64 range"):
        convert.labels(y)


def test_labels_at_the_int64_edges_are_kept_exactly() -> None:
    y = np.array([-(2**63), 2**63 - 1], dtype=np.int64)
    assert convert.labels(y).tolist() == y.tolist()
    assert convert.labels(np.array([0, 2**63 - 1], dtype=np.uint64)).tolist() == [0, 2**63 - 1]


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_a_corrupt_npz_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"not a readable \.npz file"):
        convert.load_npz(path)
