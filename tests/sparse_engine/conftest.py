"""Fixtures for sparse_engine tests: tiny backbones and few-hundred-example MNIST tasks."""

from __future__ import annotations

import pytest

from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.mnist import Mnist, digits_task

TINY = "mlp:784-64-64"
# reuse all: these tests were written for tasks that read earlier tasks' weights (the
# default until reuse auto); test_reuse_auto covers the default
FAST = TaskConfig(
    density=0.1, k=0.25, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3, reuse="all"
)


def task_of(mnist: Mnist, digits: list[int], limit: int = 300) -> TaskData:
    return digits_task(digits, limit=limit, mnist=mnist)


@pytest.fixture(scope="session")
def three_tasks(mnist: Mnist) -> list[TaskData]:
    return [task_of(mnist, [0, 1]), task_of(mnist, [2, 3]), task_of(mnist, [4, 5])]


@pytest.fixture(scope="session")
def probe(mnist: Mnist) -> TaskData:
    """Fixed inputs whose logits are compared before and after later tasks."""
    return digits_task(list(range(10)), limit=200, mnist=mnist)
