"""The compiled forward passes (sparse_engine/native/forward.cpp), loaded with ctypes.

setup.py builds them at install time for the installing machine; when they are missing
(no compiler) ``LIBRARY`` is None and the engine uses its numba kernels. The calls
release the GIL, so the engine's threads run chunks of a batch in parallel.

A plan's arrays reach the kernel as one int64 header of pointers and sizes, packed once
per plan, and the calls go through small numba functions: a ctypes call converting a
dozen numpy arrays costs ~15 µs, a tenth of a one-sample forward pass.
"""

from __future__ import annotations

import ctypes
import importlib.util
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .plan import Plan

_P = ctypes.c_void_p
_I = ctypes.c_int64

# columns of a plan's header (forward.cpp: H_*)
(
    H_META,
    H_LAYERS,
    H_VALUES,
    H_INDICES,
    H_INDEX_BYTES,
    H_INDPTR,
    H_BIAS,
    H_BOOST,
    H_HEAD_WT,
    H_FEATURES,
    H_HEAD_B,
    H_CLASSES,
    H_COLS,
) = range(13)


def _load() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec(f"{__package__}._native")
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(spec.origin)
    for name in ("sparsecl_lanes", "sparsecl_header_cols"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = []
    if lib.sparsecl_header_cols() != H_COLS:
        raise ImportError("sparse_engine._native is from another version: pip install -e .")
    # header, x, x_cols, out, lo, hi
    lib.sparsecl_forward.restype = ctypes.c_int
    lib.sparsecl_forward.argtypes = [_P, _P, _I, _P, _I, _I]
    lib.sparsecl_forward_rows.restype = ctypes.c_int
    lib.sparsecl_forward_rows.argtypes = [_P, _P, _I, _P, _I, _I]
    return lib


LIBRARY = _load()
# samples one vector holds: chunk bounds that are multiples of it fill whole vectors
LANES = LIBRARY.sparsecl_lanes() if LIBRARY is not None else 16

_HEADERS: weakref.WeakKeyDictionary[Plan, np.ndarray] = weakref.WeakKeyDictionary()
_LATENCY: weakref.WeakKeyDictionary[Plan, Callable[[Tensor], Tensor]] = weakref.WeakKeyDictionary()


def header(plan: Plan) -> np.ndarray:
    """The plan's arrays as the kernel reads them (packed on first use; the plan keeps the
    arrays alive and never changes them)."""
    packed = _HEADERS.get(plan)
    if packed is None:
        net = plan.net
        fields = {
            H_META: net.meta.ctypes.data,
            H_LAYERS: net.meta.shape[0],
            H_VALUES: net.values.ctypes.data,
            H_INDICES: net.indices.ctypes.data,
            H_INDEX_BYTES: net.indices.itemsize,
            H_INDPTR: net.indptr.ctypes.data,
            H_BIAS: net.bias.ctypes.data,
            H_BOOST: net.boost.ctypes.data,
            H_HEAD_WT: plan.head_weight_t.ctypes.data,
            H_FEATURES: plan.head_weight_t.shape[0],
            H_HEAD_B: plan.head_bias.ctypes.data,
            H_CLASSES: plan.head_bias.shape[0],
        }
        packed = np.array([fields[c] for c in range(H_COLS)], dtype=np.int64)
        _HEADERS[plan] = packed
    return packed


def _ctypes_calls() -> tuple[Callable[..., int], Callable[..., int]]:
    lib = LIBRARY
    assert lib is not None

    def blocked(hd: np.ndarray, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> int:
        return int(
            lib.sparsecl_forward(hd.ctypes.data, x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi)
        )

    def rows(hd: np.ndarray, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> int:
        return int(
            lib.sparsecl_forward_rows(
                hd.ctypes.data, x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi
            )
        )

    return blocked, rows


def _numba_calls() -> tuple[Callable[..., int], Callable[..., int]]:
    from numba import njit

    assert LIBRARY is not None
    c_blocked, c_rows = LIBRARY.sparsecl_forward, LIBRARY.sparsecl_forward_rows

    @njit(nogil=True)
    def blocked(hd: np.ndarray, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> int:
        return c_blocked(hd.ctypes.data, x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi)

    @njit(nogil=True)
    def rows(hd: np.ndarray, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> int:
        return c_rows(hd.ctypes.data, x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi)

    return blocked, rows


if LIBRARY is None:
    _blocked = _rows = None
else:
    try:
        _blocked, _rows = _numba_calls()
    except ImportError:  # pragma: no cover - numba is a dependency
        _blocked, _rows = _ctypes_calls()


def forward(plan: Plan, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """Logits of rows ``lo..hi`` of ``x`` (float32, C-contiguous) into ``out`` (N × classes),
    16 samples per vector (batches from a few samples up)."""
    if _blocked is None:
        raise RuntimeError("the native engine kernel is not built (see setup.py)")
    _check(_blocked(header(plan), x, out, lo, hi), plan)


def forward_rows(plan: Plan, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """The same, one sample at a time (small batches: latency)."""
    if _rows is None:
        raise RuntimeError("the native engine kernel is not built (see setup.py)")
    _check(_rows(header(plan), x, out, lo, hi), plan)


def latency_runner(plan: Plan) -> Callable[[Tensor], Tensor]:
    """The plan's one-sample path as a function of a float32, C-contiguous N × inputs
    tensor: a ctypes call on the tensors' own memory, as little Python as possible around
    the kernel (at batch 1 every step of it shows in the latency)."""
    run = _LATENCY.get(plan)
    if run is None:
        if LIBRARY is None:
            raise RuntimeError("the native engine kernel is not built (see setup.py)")
        kernel = LIBRARY.sparsecl_forward_rows
        packed = header(plan)
        address = packed.ctypes.data
        classes = int(plan.head_bias.shape[0])
        dtype = plan.net.indices.dtype

        def run(x: Tensor, packed: np.ndarray = packed) -> Tensor:  # packed: kept alive
            n = x.shape[0]
            out = torch.empty((n, classes))
            if kernel(address, x.data_ptr(), x.shape[1], out.data_ptr(), 0, n):
                raise ValueError(f"native forward refused the plan's {dtype} indices")
            return out

        _LATENCY[plan] = run
    return run


def warm_up() -> None:
    """Compile the numba call wrappers now, not on the first request."""
    if _blocked is None or _rows is None:
        return
    hd = np.zeros(H_COLS, dtype=np.int64)  # index width 0: refused before any array is read
    x = np.zeros((1, 1), dtype=np.float32)
    _blocked(hd, x, x, 0, 0)
    _rows(hd, x, x, 0, 0)


def _check(status: int, plan: Plan) -> None:
    if status != 0:
        raise ValueError(f"native forward refused the plan's {plan.net.indices.dtype} indices")
