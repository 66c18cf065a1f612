"""User arrays checked and converted by one set of rules, without importing torch: the
library's data adapters and the client's uploads share them (the client ships no torch
requirement of its own; a torch tensor or dataset is converted only when one is given)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError

LOADER_BATCH = 1024  # examples per step when a torch dataset is read


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor or nested sequence."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def inputs(value: Any) -> np.ndarray:
    """Inputs as sent and stored: uint8 stays uint8 (scaled by 1/255 where it is used),
    floats become float32; any other dtype is refused as ambiguous."""
    array = to_numpy(value)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind in "iub":
        raise InvalidInputError(
            f"x of integer dtype {array.dtype} is ambiguous: send uint8 (0..255) or float32"
        )
    raise InvalidInputError(f"x must be numeric, got dtype {array.dtype}")


def labels(value: Any) -> np.ndarray:
    """Labels as a vector of int64; floats only when they hold whole numbers."""
    array = to_numpy(value).reshape(-1)
    if array.dtype.kind == "f":
        if not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            raise InvalidInputError("labels must be integers (whole numbers)")
    elif array.dtype.kind not in "iu":
        raise InvalidInputError(f"labels must be integers, got dtype {array.dtype}")
    # a float or uint64 past int64 would wrap into a wrong label
    if array.size and (array.max() >= 2**63 or array.min() < -(2**63)):
        raise InvalidInputError(
            f"labels must lie in the int64 range [-2**63, 2**63), got {array.max()}"
        )
    return array.astype(np.int64)


def examples(data: Any, batch_size: int = LOADER_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from a pair of arrays/tensors, a map-style torch dataset whose items start
    with (x, y), or an Avalanche experience (its ``dataset``)."""
    if isinstance(data, tuple | list) and len(data) == 2:
        return inputs(data[0]), labels(data[1])
    dataset = getattr(data, "dataset", data)
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        from torch.utils.data import DataLoader

        xs, ys = [], []
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            xs.append(inputs(batch[0]))
            ys.append(labels(batch[1]))
        if not xs:
            raise InvalidInputError("the dataset is empty")
        return np.concatenate(xs), np.concatenate(ys)
    raise InvalidInputError(
        "data must be (x, y) arrays or tensors, a torch dataset, or an Avalanche experience; "
        f"got {type(data).__name__}"
    )
