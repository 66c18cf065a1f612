"""User arrays checked and converted by one set of rules, without importing torch: the
library's data adapters and the client's uploads share them (the client ships no torch
requirement of its own; a torch tensor or dataset is converted only when one is given)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError

LOADER_BATCH = 1024  # examples per step when a torch dataset is read


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (told by its methods: torch is not imported)."""
    return hasattr(value, "detach") and hasattr(value, "cpu")


def describe(value: Any) -> str:
    """What a user sent, for an error message: its type, and its dtype and shape when it is
    an array or a tensor ('numpy.ndarray of dtype int16 and shape (2, 3)',
    'torch.Tensor of dtype torch.bool and shape (4,)', 'list')."""
    kind = type(value)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    name = f"{module}{kind.__qualname__}"
    if is_tensor(value) or isinstance(value, np.ndarray):
        return f"{name} of dtype {value.dtype} and shape {tuple(value.shape)}"
    return name


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor or nested sequence."""
    if is_tensor(value):
        try:
            return np.asarray(value.detach().cpu().numpy())
        except TypeError:  # bfloat16 and other dtypes numpy has no form of
            raise InvalidInputError(
                f"{describe(value)} has no numpy form: send uint8, float32 or float64"
            ) from None
    return np.asarray(value)


def inputs(value: Any, what: str = "x") -> np.ndarray:
    """Inputs as sent and stored: uint8 stays uint8 (scaled by 1/255 where it is used),
    floats become float32 (C-contiguous); anything but a numpy array or torch tensor of
    those dtypes is refused, the message naming what was received."""
    if not (isinstance(value, np.ndarray) or is_tensor(value)):
        raise InvalidInputError(
            f"{what} must be a numpy array or a torch tensor, got {describe(value)}"
        )
    array = to_numpy(value)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind in "iu":
        raise InvalidInputError(
            f"{what} of integer dtype is ambiguous: send uint8 (0..255, scaled by 1/255) or "
            f"float32; got {describe(value)}"
        )
    raise InvalidInputError(
        f"{what} must hold uint8 (scaled by 1/255) or float values (float32, float64); "
        f"got {describe(value)}"
    )


def check_finite(array: np.ndarray, what: str = "x") -> None:
    """Float inputs must hold no NaN or Inf (uint8 always does)."""
    if array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
        bad = int(array.size - np.isfinite(array).sum())
        raise InvalidInputError(
            f"{what} holds NaN or Inf values ({bad} of {array.size} in a {array.dtype} array "
            f"of shape {tuple(array.shape)})"
        )


def labels(value: Any) -> np.ndarray:
    """Labels as a vector of int64; floats only when they hold whole numbers."""
    array = to_numpy(value).reshape(-1)
    if array.dtype.kind == "f":
        if not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            raise InvalidInputError(
                f"labels must be integers (whole numbers), got {describe(value)} holding "
                "fractions, NaN or Inf"
            )
    elif array.dtype.kind not in "iu":
        raise InvalidInputError(f"labels must be integers, got {describe(value)}")
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
