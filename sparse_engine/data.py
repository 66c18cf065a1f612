"""A task's examples as tensors, and adapters from numpy, torch datasets and Avalanche."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import arrays
from .errors import InvalidInputError


@dataclass(frozen=True)
class TaskData:
    """Examples ``x`` (N × ..., float32) and labels ``y`` (N, int64, any integer values)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        for what, value in (("x", self.x), ("y", self.y)):
            if not isinstance(value, Tensor):
                raise InvalidInputError(
                    f"TaskData holds torch tensors, {what} is {arrays.describe(value)}: "
                    "from_numpy or as_task converts numpy arrays"
                )
        if self.x.ndim < 2:
            raise InvalidInputError(f"x must be N × features, got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1:
            raise InvalidInputError(
                f"y must be a vector of N labels, got shape {tuple(self.y.shape)}"
            )
        if self.x.shape[0] != self.y.shape[0]:
            raise InvalidInputError(f"x has {self.x.shape[0]} examples but y has {self.y.shape[0]}")
        if self.x.shape[0] == 0:
            raise InvalidInputError("no examples: x and y are empty")
        if self.x.dtype != torch.float32:
            raise InvalidInputError(f"x must be float32, got {arrays.describe(self.x)}")
        if self.y.dtype != torch.int64:
            raise InvalidInputError(f"y must be int64 labels, got {arrays.describe(self.y)}")
        if not bool(torch.isfinite(self.x).all()):
            raise InvalidInputError("x holds NaN or Inf values")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def classes(self) -> tuple[int, ...]:
        """The task's label set: the distinct values of ``y``, sorted."""
        return tuple(int(c) for c in torch.unique(self.y).tolist())

    def subset(self, index: Tensor | slice) -> TaskData:
        return TaskData(self.x[index], self.y[index])

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Mini-batches, shuffled when a generator is given."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            idx = (
                order[start : start + batch_size]
                if order is not None
                else slice(start, start + batch_size)
            )
            yield self.x[idx], self.y[idx]

    def split(self, fraction: float, seed: int = 0) -> tuple[TaskData, TaskData]:
        """A random (1 - fraction, fraction) split, e.g. to carve validation data."""
        kept, held = self.split_order(fraction, seed)
        return self.subset(kept), self.subset(held)

    def split_order(self, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
        """The example indices ``split`` keeps and holds out, without copying any data."""
        return split_order(len(self), fraction, seed)


def split_order(n: int, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices of ``n`` examples kept and held out by a random (1 - fraction, fraction) split."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"split fraction must lie in (0, 1), got {fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = n - max(1, round(fraction * n))
    return order[:cut], order[cut:]


def as_inputs(x: Any, what: str = "x") -> Tensor:
    """Inputs as a float32 tensor, from a numpy array or torch tensor: uint8 values are
    scaled by 1/255, floats converted to float32, NaN/Inf refused; the one conversion of the
    library's entry points and the server's (errors name what was received)."""
    if (
        isinstance(x, Tensor)
        and x.dtype == torch.float32
        and x.is_cpu
        and not x.requires_grad
        and x.is_contiguous()
    ):  # the latency path (the server's Predict, checked again by SparseCL.logits): no copy,
        # and no torch op (each costs microseconds; x.device.type alone builds a string)
        arrays.check_finite(x.numpy(), what)
        return x
    array = arrays.inputs(x, what)
    arrays.check_finite(array, what)
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if not array.flags.writeable:  # a view of a message's bytes: torch wants its own
        array = array.copy()
    return torch.from_numpy(array)


def as_labels(y: Any) -> Tensor:
    """Labels as an int64 vector; floats are accepted only when they hold whole numbers."""
    return torch.from_numpy(arrays.labels(y))


def from_numpy(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> TaskData:
    """A task from numpy arrays or torch tensors (x: N × features or N × H × W, y: N labels)."""
    return TaskData(as_inputs(x), as_labels(y))


def as_task(data: Any) -> TaskData:
    """A task's examples from what a user has: TaskData as it is, or (x, y) numpy arrays or
    torch tensors, a map-style torch dataset, an Avalanche experience (``arrays.examples``)."""
    if isinstance(data, TaskData):
        return data
    return from_numpy(*arrays.examples(data))


def from_torch_dataset(
    dataset: torch.utils.data.Dataset, batch_size: int = arrays.LOADER_BATCH
) -> TaskData:
    """A task from any map-style torch dataset whose items start with (x, y)."""
    x, y = arrays.examples(dataset, batch_size)
    return from_numpy(x, y)


def from_avalanche(experience: Any) -> TaskData:
    """A task from one Avalanche experience (its ``dataset`` yields (x, y, task_label))."""
    dataset = getattr(experience, "dataset", None)
    if dataset is None:
        raise InvalidInputError("an Avalanche experience must have a .dataset")
    return from_torch_dataset(dataset)


def from_avalanche_stream(stream: Any) -> list[TaskData]:
    """One task per experience of an Avalanche stream (train or test)."""
    return [from_avalanche(experience) for experience in stream]
