from __future__ import annotations

import numpy as np
import pytest
import torch

from sparse_engine.data import (
    TaskData,
    as_inputs,
    as_task,
    from_avalanche,
    from_numpy,
    from_torch_dataset,
)
from sparse_engine.errors import InvalidInputError
from sparse_engine.mnist import Mnist


def test_uint8_images_are_scaled_to_unit_range(mnist: Mnist) -> None:
    data = from_numpy(mnist.x_test[:10], mnist.y_test[:10])
    assert data.x.dtype == torch.float32
    assert torch.equal(data.x, torch.from_numpy(mnist.x_test[:10]).float() / 255)
    assert data.y.tolist() == mnist.y_test[:10].tolist()


def test_float32_inputs_are_used_as_they_are() -> None:
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32) * 100
    assert torch.equal(from_numpy(x, np.array([0, 1, 0, 1])).x, torch.from_numpy(x))


def test_label_set_is_whatever_y_holds() -> None:
    data = from_numpy(np.zeros((4, 2), np.float32), np.array([7, -3, 7, 12]))
    assert data.classes == (-3, 7, 12)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((3, 2), np.int32), np.arange(3), "ambiguous"),
        (np.zeros((3, 2), np.float32), np.array([0.5, 1, 2]), "integers"),
        (np.zeros((3, 2), np.float32), np.arange(2), "examples"),
        (np.zeros((0, 2), np.float32), np.arange(0), "empty"),
        (np.full((2, 2), np.inf, np.float32), np.arange(2), "NaN or Inf"),
        (np.zeros(3, np.float32), np.arange(3), "N × features"),
    ],
    ids=["int-x", "fractional-y", "length-mismatch", "empty", "inf", "one-dim-x"],
)
def test_malformed_arrays_are_refused(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        from_numpy(x, y)


def test_torch_dataset_adapter_reads_every_item() -> None:
    x = torch.randn(10, 1, 4, 4)
    y = torch.arange(10) % 3
    data = from_torch_dataset(torch.utils.data.TensorDataset(x, y), batch_size=4)
    assert torch.equal(data.x, x)
    assert torch.equal(data.y, y)


def test_avalanche_experience_becomes_a_task(mnist: Mnist) -> None:
    from avalanche.benchmarks import tensors_benchmark

    x = torch.from_numpy(mnist.x_train[:40]).float().unsqueeze(1) / 255
    y = torch.from_numpy(mnist.y_train[:40])
    bench = tensors_benchmark(
        train_tensors=[(x[:20], y[:20]), (x[20:], y[20:])],
        test_tensors=[(x[:20], y[:20]), (x[20:], y[20:])],
        task_labels=[0, 1],
    )
    data = from_avalanche(bench.train_stream[1])
    assert torch.equal(data.x, x[20:])
    assert torch.equal(data.y, y[20:])


def test_split_carves_disjoint_parts() -> None:
    data = TaskData(torch.arange(20.0).reshape(10, 2), torch.arange(10))
    train, val = data.split(0.2)
    assert len(train) == 8
    assert len(val) == 2
    assert set(train.y.tolist()).isdisjoint(val.y.tolist())


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((3, 2), np.float32), torch.arange(3), "x is numpy.ndarray of dtype float32"),
        (torch.zeros(3, 2), np.arange(3), "y is numpy.ndarray of dtype int64"),
        (torch.zeros(3, 2, dtype=torch.float64), torch.arange(3), "torch.float64 and shape (3, 2)"),
    ],
    ids=["numpy-x", "numpy-y", "float64-tensor"],
)
def test_task_data_names_what_it_was_given(x: object, y: object, message: str) -> None:
    """A numpy float32 array is not refused as 'must be float32, got float32'."""
    with pytest.raises(InvalidInputError) as e:
        TaskData(x, y)  # type: ignore[arg-type]
    assert message in str(e.value)


@pytest.mark.parametrize("x", [np.arange(6, dtype=np.uint8), np.ones(6), np.ones(6, np.float32)])
def test_as_inputs_converts_numpy_and_torch_alike(x: np.ndarray) -> None:
    """uint8 scaled by 1/255, floats to float32; the same bits from numpy and torch."""
    want = torch.from_numpy(x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0))
    for value in (x, torch.from_numpy(x), x[::-1].copy()[::-1]):
        got = as_inputs(value)
        assert got.dtype == torch.float32 and torch.equal(got, want)


def test_as_task_takes_pairs_of_arrays_or_tensors() -> None:
    x, y = np.eye(4, dtype=np.float32), np.array([0, 1, 0, 1])
    a, b = as_task((x, y)), as_task((torch.from_numpy(x), torch.from_numpy(y).int()))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and as_task(a) is a
