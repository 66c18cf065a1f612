"""Task-free inference: the right task on well-separated tasks, a calibrated confidence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_engine import SparseCL, TaskConfig
from sparse_engine.errors import UnknownTaskError
from sparse_engine.mnist import Mnist, permuted_mnist
from sparse_engine.state import dumps, loads
from sparse_engine.taskfree import (
    PRECISION,
    IdentityBank,
    expected_calibration_error,
    fit_identity,
)

from .conftest import TINY

OLD_BLOBS = Path(__file__).resolve().parent.parent / "data" / "identity32.npz"

# reuse all: written for tasks that read earlier tasks' weights (the default until auto)
CONFIG = TaskConfig(
    density=0.1, k=0.25, epochs=2, retrain_epochs=2, batch_size=64, lr=3e-3, reuse="all"
)


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
    assert task.identity.basis.dtype == task.identity.mean.dtype == PRECISION == torch.float16
    for field in dataclasses.fields(task.identity):  # the values in memory are those stored
        kept, stored = getattr(task.identity, field.name), getattr(back.identity, field.name)
        assert kept.dtype == stored.dtype and torch.equal(kept, stored), field.name
    assert loads(dumps(dataclasses.replace(task, identity=None))).identity is None


def test_identity_of_tiny_classes_and_no_task() -> None:
    x, y = torch.rand(5, 784), torch.tensor([0, 0, 1, 1, 1])
    identity = fit_identity(x, y)
    assert identity.classes == 2 and identity.components == 1  # fewer than 2 examples - 1
    assert bool((identity.noise > 0).all()) and bool((identity.variances > 0).all())
    with pytest.raises(UnknownTaskError, match="no committed task"):
        SparseCL(TINY).predict(None, x)


def test_a_learned_task_scores_with_its_stored_identity_bit_for_bit(
    permuted: tuple[SparseCL, torch.Tensor, torch.Tensor, list[str]],
) -> None:
    """The trainer's answer (identity in memory since learning) is a replica's (loaded)."""
    model, x, _, _ = permuted
    replica = SparseCL(TINY)
    replica.backbone, replica.owners = model.backbone, model.owners
    replica.tasks = {n: loads(dumps(t)) for n, t in model.tasks.items()}
    mine, theirs = model.infer_task(x), replica.infer_task(x)
    assert mine.tasks == theirs.tasks and torch.equal(mine.labels, theirs.labels)
    assert mine.confidence.numpy().tobytes() == theirs.confidence.numpy().tobytes()
    assert mine.task_probs.numpy().tobytes() == theirs.task_probs.numpy().tobytes()


def test_float16_rounds_the_means_and_directions_only(mnist: Mnist) -> None:
    check = SparseCL(TINY).check_inputs
    x, y = check(mnist.x_train[:600]), torch.from_numpy(mnist.y_train[:600])
    wide, narrow = fit_identity(x, y, precision=torch.float32), fit_identity(x, y)
    assert narrow.mean.dtype == narrow.basis.dtype == torch.float16
    assert torch.equal(narrow.mean, wide.mean.half())
    assert torch.equal(narrow.basis, wide.basis.half())
    assert torch.equal(narrow.variances, wide.variances) and torch.equal(narrow.noise, wide.noise)
    assert narrow.mean.nbytes + narrow.basis.nbytes == (wide.mean.nbytes + wide.basis.nbytes) // 2
    probe = check(mnist.x_test[:500])
    scores = [IdentityBank([i]).scores(probe)[:, 0] for i in (wide, narrow)]
    # log-likelihoods of hundreds of nats move by well under a nat (TEMPERATURE is 45)
    assert float((scores[0] - scores[1]).abs().max()) < 1.0


def test_float32_identities_stored_by_earlier_releases_score_as_before() -> None:
    """tests/data/identity32.npz: blobs and scores written by the release before float16.

    The scores come from float32 matrix products, whose last bits depend on the BLAS
    kernels torch picks for the CPU model (the file was written on an AMD EPYC; an Intel
    Xeon with the same vector flags differs by 2e-7 relative), so they are compared to
    float32 rounding, and the task each probe is assigned to must not change."""
    with np.load(OLD_BLOBS) as old:
        tasks = [loads(old[name].tobytes()) for name in ("low", "high")]
        probe, want = old["probe"], old["scores"]
    identities = [t.identity for t in tasks]
    assert all(i is not None and i.basis.dtype == torch.float32 for i in identities)
    x = SparseCL(TINY).check_inputs(probe)
    got = IdentityBank([i for i in identities if i is not None]).scores(x)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=0)
    assert (got.numpy().argmax(1) == want.argmax(1)).all()
    # a bank of an old float32 task beside a float16 one scores each as it would alone
    low = identities[0]
    assert low is not None
    half = dataclasses.replace(low, mean=low.mean.half(), basis=low.basis.half())
    mixed = IdentityBank([low, half]).scores(x)
    assert torch.allclose(mixed[:, 0], IdentityBank([low]).scores(x)[:, 0], rtol=1e-12)
    assert torch.allclose(mixed[:, 1], IdentityBank([half]).scores(x)[:, 0], rtol=1e-12)
