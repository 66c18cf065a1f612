"""Turn user data (numpy, torch, Avalanche, .npz files) into arrays the API sends.

The rules for user arrays are the library's (``sparse_engine.arrays``, which imports no
torch); nothing of the server is imported.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sparse_engine.arrays import inputs, labels
from sparsecl import tensors as codec
from sparsecl.v1 import sparsecl_pb2 as pb


def load_npz(path: str | Path, need_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (and ``y``) from an .npz file; uint8 x is scaled by the server, float32 used as is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files if name in ("x", "y")}
            files = sorted(npz.files)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file ({e})") from None
    if "x" not in arrays:
        raise KeyError(f"{path} has no array 'x' (it holds {files})")
    if need_labels and "y" not in arrays:
        raise KeyError(f"{path} has no array 'y' of labels (it holds {files})")
    x = inputs(arrays["x"])
    y = labels(arrays["y"]) if "y" in arrays else None
    return x, y


def tensor(array: np.ndarray) -> pb.Tensor:
    """An array as a Tensor message: shape, dtype, raw little-endian bytes."""
    return codec.encode(array)


def array(message: pb.Tensor) -> np.ndarray:
    """The array a Tensor message holds (native byte order, writable)."""
    return codec.decode(message).astype(codec.DTYPES[message.dtype].newbyteorder("="))


def chunks(n: int, row_bytes: int, limit: int, max_rows: int | None = None) -> Iterator[slice]:
    """Row slices of at most ``limit`` bytes (and ``max_rows`` rows) each, at least one row."""
    step = max(1, limit // max(1, row_bytes))
    if max_rows is not None:
        step = max(1, min(step, max_rows))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))
