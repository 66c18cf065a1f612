"""Real MNIST from the project's shared data folder, and the standard continual streams on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import TaskData, from_numpy

ENV_VAR = "SPARSECL_MNIST"
DEFAULT_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist.npz"
MEAN, STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays: uint8 images (N × 28 × 28) and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class StreamTask:
    """One task of a continual stream: its name and train / validation / test data."""

    name: str
    train: TaskData
    val: TaskData
    test: TaskData


def mnist_path() -> Path:
    """Where MNIST is read from: $SPARSECL_MNIST, else ../shared/data/mnist.npz."""
    return Path(os.environ.get(ENV_VAR, DEFAULT_PATH))


def load_mnist(path: Path | str | None = None) -> Mnist:
    """Load MNIST from an .npz with x_train, y_train, x_test, y_test; never downloads."""
    path = Path(path) if path is not None else mnist_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST not found at {path}: put the shared mnist.npz there or set "
            f"{ENV_VAR} to its path (keys x_train, y_train, x_test, y_test)"
        )
    with np.load(path) as npz:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
        if missing:
            raise KeyError(f"{path} lacks the arrays {sorted(missing)}")
        return Mnist(npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"])


def normalize(data: TaskData) -> TaskData:
    """Standardise pixel values (0..1) with MNIST's mean and std."""
    return TaskData((data.x - MEAN) / STD, data.y)


def _carve(
    x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, val_fraction: float, seed: int
) -> tuple[TaskData, TaskData, TaskData]:
    train, val = normalize(from_numpy(x, y)).split(val_fraction, seed=seed)
    return train, val, normalize(from_numpy(xt, yt))


def split_mnist(
    mnist: Mnist | None = None,
    tasks: int = 5,
    val_fraction: float = 0.1,
    train_limit: int | None = None,
    seed: int = 0,
) -> list[StreamTask]:
    """Split-MNIST: digits {0,1}, {2,3}, ... as separate tasks (task id given)."""
    mnist = mnist or load_mnist()
    per = 10 // tasks
    stream = []
    for t in range(tasks):
        digits = list(range(t * per, (t + 1) * per))
        tr = np.isin(mnist.y_train, digits)
        te = np.isin(mnist.y_test, digits)
        x, y = mnist.x_train[tr], mnist.y_train[tr]
        if train_limit is not None:
            x, y = x[:train_limit], y[:train_limit]
        train, val, test = _carve(x, y, mnist.x_test[te], mnist.y_test[te], val_fraction, seed)
        stream.append(StreamTask("digits-" + "".join(map(str, digits)), train, val, test))
    return stream


def permutations(tasks: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Permuted MNIST's pixel permutations, one per task, in order (drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    for _ in range(tasks):
        yield rng.permutation(28 * 28)


def permuted_task(
    mnist: Mnist,
    perm: np.ndarray,
    number: int,
    val_fraction: float = 0.1,
    train_limit: int | None = None,
    seed: int = 0,
) -> StreamTask:
    """Permuted MNIST's task ``number`` (1-based): every image under pixel permutation
    ``perm``."""
    x_train, y_train = mnist.x_train, mnist.y_train
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    px = x_train.reshape(len(x_train), -1)[:, perm]
    train, val = normalize(from_numpy(px, y_train)).split(val_fraction, seed=seed)
    return StreamTask(f"permuted-{number}", train, val, permuted_test(mnist, perm))


def permuted_test(mnist: Mnist, perm: np.ndarray, limit: int | None = None) -> TaskData:
    """The test split (its first ``limit`` images) under pixel permutation ``perm``."""
    x, y = mnist.x_test[:limit], mnist.y_test[:limit]
    return normalize(from_numpy(x.reshape(len(x), -1)[:, perm], y))


def permuted_mnist(
    mnist: Mnist | None = None,
    tasks: int = 10,
    val_fraction: float = 0.1,
    train_limit: int | None = None,
    seed: int = 0,
) -> list[StreamTask]:
    """Permuted MNIST: the same 10 digits, each task under its own fixed pixel permutation
    (every task in memory at once: ``permuted_task`` builds one at a time)."""
    mnist = mnist or load_mnist()
    return [
        permuted_task(mnist, perm, t + 1, val_fraction, train_limit, seed)
        for t, perm in enumerate(permutations(tasks, seed))
    ]


def digits_task(
    digits: list[int], limit: int | None = None, mnist: Mnist | None = None
) -> TaskData:
    """A small real task from the MNIST training split: examples of the given digits."""
    mnist = mnist or load_mnist()
    keep = np.isin(mnist.y_train, digits)
    x, y = mnist.x_train[keep], mnist.y_train[keep]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return normalize(from_numpy(x, y))


__all__ = [
    "Mnist",
    "StreamTask",
    "digits_task",
    "load_mnist",
    "mnist_path",
    "normalize",
    "permutations",
    "permuted_mnist",
    "permuted_task",
    "permuted_test",
    "split_mnist",
]
