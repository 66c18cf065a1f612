"""Shared fixtures: small real tasks from MNIST (../shared/data/mnist.npz)."""

from __future__ import annotations

import pytest

from sparse_engine.mnist import Mnist, load_mnist


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    """Real MNIST; fails with a message naming the missing file rather than skipping."""
    return load_mnist()
