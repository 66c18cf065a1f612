"""Turn user data (numpy, torch, Avalanche, .npz files) into arrays the API sends.

Kept free of server and sparse_engine imports on purpose: the client ships alone.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sparsecl import tensors as codec
from sparsecl.v1 import sparsecl_pb2 as pb


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor or nested sequence."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def inputs(value: Any) -> np.ndarray:
    """Inputs as sent: uint8 stays uint8 (the server scales by 1/255), floats become float32."""
    array = to_numpy(value)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        return np.ascontiguousarray(array, dtype=np.float32)
    raise ValueError(
        f"inputs of dtype {array.dtype} are ambiguous: use uint8 (0..255) or float32 values"
    )


def labels(value: Any) -> np.ndarray:
    """Labels as int64; float labels must hold whole numbers."""
    array = to_numpy(value).reshape(-1)
    if array.dtype.kind == "f":
        if not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            raise ValueError("labels must be whole numbers")
    elif array.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {array.dtype}")
    # a float or uint64 past int64 would wrap into a wrong label
    if array.size and (array.max() >= 2**63 or array.min() < -(2**63)):
        raise ValueError(f"labels must lie in the int64 range [-2**63, 2**63), got {array.max()}")
    return array.astype(np.int64)


def examples(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from a pair of arrays/tensors, a torch dataset or an Avalanche experience."""
    if isinstance(data, tuple | list) and len(data) == 2:
        return inputs(data[0]), labels(data[1])
    dataset = getattr(data, "dataset", data)  # an Avalanche experience wraps its dataset
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        from torch.utils.data import DataLoader

        xs, ys = [], []
        for batch in DataLoader(dataset, batch_size=1024, shuffle=False):
            xs.append(inputs(batch[0]))
            ys.append(labels(batch[1]))
        if not xs:
            raise ValueError("the dataset is empty")
        return np.concatenate(xs), np.concatenate(ys)
    raise TypeError(
        "data must be (x, y) arrays or tensors, a torch dataset, or an Avalanche experience; "
        f"got {type(data).__name__}"
    )


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
