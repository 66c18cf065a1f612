from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparse_engine.mnist import Mnist, load_mnist, permuted_mnist, split_mnist


def test_missing_file_names_the_path_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="SPARSECL_MNIST"):
        load_mnist(tmp_path / "nope.npz")


def test_shared_mnist_is_the_full_standard_split(mnist: Mnist) -> None:
    assert mnist.x_train.shape == (60000, 28, 28)
    assert mnist.x_test.shape == (10000, 28, 28)
    assert np.bincount(mnist.y_test).tolist()[:3] == [980, 1135, 1032]


def test_split_mnist_gives_two_digits_per_task(mnist: Mnist) -> None:
    stream = split_mnist(mnist, train_limit=100)
    assert [t.name for t in stream] == [f"digits-{2 * i}{2 * i + 1}" for i in range(5)]
    assert stream[2].train.classes == (4, 5)
    assert stream[2].test.classes == (4, 5)


def test_permuted_mnist_permutes_train_and_test_alike(mnist: Mnist) -> None:
    stream = permuted_mnist(mnist, tasks=2, train_limit=50)
    a, b = stream
    assert a.test.classes == tuple(range(10))
    # the same test image under two permutations: same pixel multiset, different order
    xa, xb = a.test.x[0].flatten(), b.test.x[0].flatten()
    assert np.allclose(np.sort(xa.numpy()), np.sort(xb.numpy()))
    assert not np.allclose(xa.numpy(), xb.numpy())
