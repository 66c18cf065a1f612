"""Task-free inference: the right task on well-separated tasks, a calibrated confidence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sparse_engine import SparseCL, TaskConfig
from sparse_engine.errors import UnknownTaskError
from sparse_engine.mnist import Mnist, permuted_mnist
from sparse_engine.state import dumps, loads
from sparse_engine.taskfree import expected_calibration_error, fit_identity

from .conftest import TINY

CONFIG = TaskConfig(density=0.1, k=0.25, epochs=2, retrain_epochs=2, batch_size=64, lr=3e-3)


@pytest.fixture(scope="module")
def permuted(mnist: Mnist) -> tuple[SparseCL, torch.Tensor, torch.Tensor, list[str]]:
    """Three permuted-MNIST tasks learned on a tiny backbone, and 300 test inputs of each."""
    stream = permuted_mnist(mnist, tasks=3, train_limit=2000)
    model = SparseCL(TINY)
    for task in stream:
        model.learn_task(task.name, task.train, task.val, CONFIG)
    x = torch.cat([t.test.x[:300] for t in stream])
    y = torch.cat([t.test.y[:300] for t in stream])
    return model, x, y, [t.name for t in stream for _ in range(300)]


def test_picks_the_right_permutation_with_a_calibrated_confidence(
    permuted: tuple[SparseCL, torch.Tensor, torch.Tensor, list[str]],
) -> None:
    model, x, y, truth = permuted
    result = model.predict(None, x)
    assert result.rule == "identity"
    assert result.names == ("permuted-1", "permuted-2", "permuted-3")
    picked = np.array(result.tasks)
    assert (picked == np.array(truth)).mean() >= 0.99
    # the label is the picked task's own prediction
    for name in result.names:
        rows = torch.from_numpy(picked == name)
        assert torch.equal(result.labels[rows], model.predict(name, x[rows]))
    correct = result.labels == y
    assert correct.float().mean() > 0.8
    assert result.confidence.dtype == torch.float32
    assert bool(((result.confidence > 0) & (result.confidence <= 1)).all())
    assert expected_calibration_error(result.confidence, correct) < 0.1
    assert result.confidence[correct].mean() > result.confidence[~correct].mean() + 0.1
    assert torch.allclose(result.task_probs.sum(1), torch.ones(len(x)))


def test_entropy_rule_for_tasks_stored_without_identity(
    permuted: tuple[SparseCL, torch.Tensor, torch.Tensor, list[str]],
) -> None:
    model, x, _, truth = permuted
    old = SparseCL(TINY)
    old.backbone, old.owners = model.backbone, model.owners
    old.tasks = {n: dataclasses.replace(t, identity=None) for n, t in model.tasks.items()}
    result = old.infer_task(x)
    assert result.rule == "entropy"
    assert (np.array(result.tasks) == np.array(truth)).mean() > 0.8


def test_identity_survives_storage_and_old_blobs_have_none(
    permuted: tuple[SparseCL, torch.Tensor, torch.Tensor, list[str]],
) -> None:
    task = permuted[0].task("permuted-2")
    assert task.identity is not None
    back = loads(dumps(task))
    assert back.identity is not None
    assert torch.equal(back.identity.basis, task.identity.basis)
    assert torch.equal(back.identity.noise, task.identity.noise)
    assert loads(dumps(dataclasses.replace(task, identity=None))).identity is None


def test_identity_of_tiny_classes_and_no_task() -> None:
    x, y = torch.rand(5, 784), torch.tensor([0, 0, 1, 1, 1])
    identity = fit_identity(x, y)
    assert identity.classes == 2 and identity.components == 1  # fewer than 2 examples - 1
    assert bool((identity.noise > 0).all()) and bool((identity.variances > 0).all())
    with pytest.raises(UnknownTaskError, match="no committed task"):
        SparseCL(TINY).predict(None, x)
