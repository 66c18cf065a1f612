"""AddTask uploads held as they arrive: raw bytes (uint8 stays uint8), bounded server-wide.

An upload's examples are appended chunk by chunk into one growing buffer per split, so
there is never a list of chunks plus a concatenated copy; the bytes count against the
server-wide ``max_buffered_bytes`` before a chunk is accepted, and stay counted until the
job that holds them has trained (or failed). Conversion to float32 happens only when the
job starts training, in the trainer's thread.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from sparse_engine.data import TaskData, as_inputs
from sparse_engine.errors import InvalidInputError

from .limits import LimitExceededError

LABEL_BYTES = 8  # int64 labels


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
