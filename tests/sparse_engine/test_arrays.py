"""User arrays by one set of rules: numpy, torch and Avalanche data become the arrays
the library trains on and the client sends (uint8 stays uint8, labels int64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparse_engine import arrays
from sparse_engine.mnist import Mnist


def test_torch_tensors_become_numpy_float32_and_int64() -> None:
    x, y = arrays.examples((torch.rand(4, 784, dtype=torch.float64), torch.tensor([1, 2, 1, 2])))
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (4, 784)


def test_uint8_inputs_are_sent_as_uint8() -> None:
    x, _ = arrays.examples((np.zeros((2, 28, 28), np.uint8), [0, 1]))
    assert x.dtype == np.uint8


def test_integer_inputs_other_than_uint8_are_refused() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        arrays.inputs(np.zeros((2, 3), np.int32))


def test_avalanche_experience_gives_its_examples(mnist: Mnist) -> None:
    from avalanche.benchmarks import tensors_benchmark

    x = torch.from_numpy(mnist.x_train[:40]).float().unsqueeze(1) / 255
    y = torch.from_numpy(mnist.y_train[:40])
    bench = tensors_benchmark(
        train_tensors=[(x[:20], y[:20]), (x[20:], y[20:])],
        test_tensors=[(x[:20], y[:20])],
        task_labels=[0, 1],
    )
    got_x, got_y = arrays.examples(bench.train_stream[1])
    assert np.array_equal(got_x, x[20:].numpy()) and np.array_equal(got_y, y[20:].numpy())


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
        arrays.labels(y)


def test_labels_at_the_int64_edges_are_kept_exactly() -> None:
    y = np.array([-(2**63), 2**63 - 1], dtype=np.int64)
    assert arrays.labels(y).tolist() == y.tolist()
    assert arrays.labels(np.array([0, 2**63 - 1], dtype=np.uint64)).tolist() == [0, 2**63 - 1]
