"""Uploads of a task's examples (AddTask) held as they arrive: raw bytes (uint8 stays
uint8), checked chunk by chunk, bounded server-wide.

An upload is a ``Header``, then ``Chunk``s of examples. Each chunk is read, checked and
appended on one low-priority thread of its own into one growing buffer per split, so
there is never a list of chunks plus a concatenated copy; the bytes count against the
server-wide ``max_buffered_bytes`` before a chunk is accepted, and stay counted until the
job that holds them has trained (or failed). Conversion to float32 happens only when the
job starts training, in the trainer's thread.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData, as_inputs
from sparse_engine.errors import InvalidInputError, brief
from sparse_engine.tune import Search

from . import inputs
from .config import ServerConfig
from .errors import LimitExceededError
from .inputs import ArrayLike
from .limits import check_classes, check_upload

LABEL_BYTES = 8  # int64 labels
TRAINING, VALIDATION = "training", "validation"


@dataclass(frozen=True)
class Header:
    """An upload's first item: the task to learn, and what its chunks will hold."""

    name: str
    config: TaskConfig
    labels: tuple[int, ...] = ()  # exactly the training labels' distinct values; () = unsaid
    train_examples: int = 0  # 0 = not announced
    val_examples: int = 0
    tune: Search | None = None  # tune (density, k) first; None = no


@dataclass(frozen=True)
class Chunk:
    """Examples of one split; ``read`` returns x and y on the upload thread (decoding and
    checking megabytes must not stall the event loop)."""

    split: str  # TRAINING or VALIDATION; anything else ("" = none named) is refused
    nbytes: int  # bytes as sent, counted before they are read
    read: Callable[[], tuple[ArrayLike, ArrayLike]]

    @classmethod
    def of(cls, split: str, x: ArrayLike, y: ArrayLike) -> Chunk:
        """A chunk of arrays already in memory."""
        return cls(split, x.nbytes + y.nbytes, lambda: (x, y))


class BufferPool:
    """The server-wide budget of bytes that uploads and queued jobs may hold (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> None:
        """Count ``nbytes`` more, or raise LimitExceededError (nothing counted) past the cap."""
        with self._lock:
            if self.used + nbytes > self.capacity:
                raise LimitExceededError(
                    f"the server holds {self.used} bytes of uploads and queued tasks; "
                    f"{nbytes} more would exceed its --max-buffered-bytes of {self.capacity}: "
                    "retry once queued tasks have trained, or send fewer examples (uint8)"
                )
            self.used += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class Reservation:
    """The bytes one upload (then its job) holds in a pool; released exactly once."""

    def __init__(self, pool: BufferPool) -> None:
        self.pool = pool
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.pool.reserve(nbytes)
            self.bytes += nbytes

    def release(self) -> None:
        with self._lock:
            self.pool.release(self.bytes)
            self.bytes = 0


@dataclass(frozen=True)
class Examples:
    """One split of an upload: ``x`` N × features as sent (uint8 or float32), ``y`` int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def labels(self) -> torch.Tensor:
        return torch.from_numpy(self.y)

    def task_data(self) -> TaskData:
        """The float32 examples the learner trains on (uint8 scaled by 1/255)."""
        return TaskData(as_inputs(self.x), torch.from_numpy(self.y))


class SplitBuffer:
    """One split's examples as they arrive (mutable, per upload). With the count the header
    announced, the split is allocated once at its first chunk and its bytes are reserved
    then, so an upload that cannot fit is refused before it sends more; without one the
    buffer grows chunk by chunk, each counted before it is kept."""

    def __init__(
        self, what: str, reservation: Reservation, expected: int = 0, max_bytes: int = 0
    ) -> None:
        self.what = what
        self.reservation = reservation
        self.expected = expected
        self.max_bytes = max_bytes  # --max-upload-bytes: an announced split past it is refused
        self.dtype: np.dtype | None = None
        self.features = 0
        self.rows = 0
        self._x: np.ndarray | bytearray = bytearray()
        self._y: np.ndarray | bytearray = bytearray()

    def append(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add one chunk: ``x`` N × ... (uint8 or float32), ``y`` N int64 labels."""
        n, features = int(x.shape[0]), math.prod(x.shape[1:])
        if self.dtype is None:
            self.dtype, self.features = x.dtype, features
            if self.expected:
                size = self.expected * (features * x.itemsize + LABEL_BYTES)
                if self.max_bytes and size > self.max_bytes:
                    raise LimitExceededError(
                        f"the header announces {self.expected} {self.what} examples of "
                        f"{features * x.itemsize} bytes: {size} bytes, over the server's "
                        f"--max-upload-bytes of {self.max_bytes}; send fewer (or uint8 inputs)"
                    )
                self.reservation.add(size)
                self._x = np.empty((self.expected, features), dtype=x.dtype)
                self._y = np.empty(self.expected, dtype=np.int64)
        elif x.dtype != self.dtype or features != self.features:
            raise InvalidInputError(
                f"every {self.what} chunk must hold the same dtype and example size: this one "
                f"has {x.dtype} × {features}, the first had {self.dtype} × {self.features}"
            )
        if n == 0:
            return
        if isinstance(self._x, np.ndarray) and isinstance(self._y, np.ndarray):
            if self.rows + n > self.expected:
                raise InvalidInputError(
                    f"more {self.what} examples arrived than the header announced ({self.expected})"
                )
            self._x[self.rows : self.rows + n] = x.reshape(n, features)
            self._y[self.rows : self.rows + n] = y
        else:
            self.reservation.add(x.nbytes + n * LABEL_BYTES)
            self._x += np.ascontiguousarray(x).data.cast("B")
            self._y += np.ascontiguousarray(y, dtype="<i8").data.cast("B")
        self.rows += n

    def examples(self) -> Examples | None:
        """The split's examples (views of the buffers, no copy); None when nothing arrived."""
        if self.dtype is None or self.rows == 0:
            return None
        if isinstance(self._x, np.ndarray) and isinstance(self._y, np.ndarray):
            return Examples(self._x[: self.rows], self._y[: self.rows])
        x = np.frombuffer(self._x, dtype=self.dtype).reshape(self.rows, self.features)
        y = np.frombuffer(self._y, dtype="<i8").astype(np.int64, copy=False)
        return Examples(x, y)


class Upload:
    """One upload's examples as its chunks arrive (mutable, per call): each chunk is counted
    against the server's limits, checked, and appended to its split."""

    def __init__(
        self,
        header: Header,
        reservation: Reservation,
        config: ServerConfig,
        check_shape: Callable[[tuple[int, ...]], None],
    ) -> None:
        self.header = header
        self.config = config
        self.check_shape = check_shape  # inputs must fit the backbone
        most = config.max_upload_bytes
        self.splits = {
            TRAINING: SplitBuffer(TRAINING, reservation, header.train_examples, most),
            VALIDATION: SplitBuffer(VALIDATION, reservation, header.val_examples, most),
        }
        self.bytes = 0  # as sent
        self.labels: set[int] = set()  # the training labels so far

    def count(self, chunk: Chunk) -> None:
        """Count a chunk's bytes before it is read (cheap: on the event loop)."""
        if chunk.split not in self.splits:
            raise InvalidInputError("each chunk must say its split: SPLIT_TRAIN or SPLIT_VAL")
        self.bytes += chunk.nbytes
        self.check()

    def check(self) -> None:
        """The upload so far within the server's --max-upload-bytes and --max-examples."""
        check_upload(self.bytes, sum(split.rows for split in self.splits.values()), self.config)

    def keep(self, chunk: Chunk) -> None:
        """Read and check a counted chunk, and append it to its split (on the upload thread)."""
        sent_x, sent_y = chunk.read()
        x, y = inputs.raw_inputs(sent_x, "x"), inputs.labels(sent_y, "y").numpy()
        if x.ndim < 2 or x.shape[0] != y.shape[0]:
            raise InvalidInputError(
                f"a chunk holds x of shape {list(x.shape)} and y of shape {list(y.shape)}: "
                "x must be N × features with one label per example"
            )
        self.check_shape(tuple(x.shape))
        split = self.splits[chunk.split]
        if split.what == TRAINING:
            self.labels.update(np.unique(y).tolist())
            check_classes(len(self.labels), self.config)
        split.append(x, y)
        self.check()

    def examples(self) -> tuple[Examples, Examples | None]:
        """The training and validation examples once every chunk arrived, checked against
        what the header announced."""
        train, val = self.splits[TRAINING].examples(), self.splits[VALIDATION].examples()
        if train is None:
            raise InvalidInputError("no training examples were sent")
        for split in self.splits.values():
            if split.expected and split.rows != split.expected:
                raise InvalidInputError(
                    f"the header announced {split.expected} {split.what} examples but "
                    f"{split.rows} arrived"
                )
        if self.header.labels and set(self.header.labels) != self.labels:
            raise InvalidInputError(
                f"the header's label set {brief(sorted(set(self.header.labels)))} differs from "
                f"the training labels {brief(sorted(self.labels))}"
            )
        return train, val


def upload_thread() -> ThreadPoolExecutor:
    """The one thread that reads and copies upload chunks: its own, so that they do not
    crowd out Predict's calls in the shared pool, and at a lower CPU priority (Linux: nice
    is per thread), so that copying uploads yields the cores to Predict when both want them."""
    return ThreadPoolExecutor(1, "sparsecl-upload", initializer=_lower_priority)


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
