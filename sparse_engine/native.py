"""The compiled forward passes (sparse_engine/native/forward.cpp), loaded with ctypes.

setup.py builds them at install time for the installing machine; when they are missing
(no compiler) ``LIBRARY`` is None and the engine uses its numba kernels. The calls
release the GIL, so the engine's threads run chunks of a batch in parallel.

A plan's arrays reach the kernel as one int64 header of pointers and sizes, packed once
per plan: a ctypes call converting a dozen numpy arrays to pointers costs ~15 µs, a
tenth of a one-sample forward pass.
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

from .plan import M_COLS

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
    for name in ("sparsecl_lanes", "sparsecl_header_cols", "sparsecl_meta_cols"):
        if not hasattr(lib, name):
            raise ImportError("sparse_engine._native is from another version: pip install -e .")
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = []
    if lib.sparsecl_header_cols() != H_COLS or lib.sparsecl_meta_cols() != M_COLS:
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

_HEADERS: weakref.WeakKeyDictionary[Plan, tuple[np.ndarray, int]] = weakref.WeakKeyDictionary()
_LATENCY: weakref.WeakKeyDictionary[Plan, Callable[[Tensor], Tensor]] = weakref.WeakKeyDictionary()


def header(plan: Plan) -> tuple[np.ndarray, int]:
    """The plan's arrays as the kernel reads them, and that header's address (packed on
    first use; the plan keeps the arrays alive and never changes them)."""
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
        array = np.array([fields[c] for c in range(H_COLS)], dtype=np.int64)
        packed = (array, array.ctypes.data)
        _HEADERS[plan] = packed
    return packed


def _library() -> ctypes.CDLL:
    if LIBRARY is None:
        raise RuntimeError("the native engine kernel is not built (see setup.py)")
    return LIBRARY


def forward(plan: Plan, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """Logits of rows ``lo..hi`` of ``x`` (float32, C-contiguous) into ``out`` (N × classes),
    ``LANES`` samples per vector (batches from a few samples up)."""
    status = _library().sparsecl_forward(
        header(plan)[1], x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi
    )
    _check(status, plan.net.indices.dtype)


def forward_rows(plan: Plan, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """The same, one sample at a time (small batches: latency)."""
    status = _library().sparsecl_forward_rows(
        header(plan)[1], x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi
    )
    _check(status, plan.net.indices.dtype)


def latency_runner(plan: Plan) -> Callable[[Tensor], Tensor]:
    """The plan's one-sample path as a function of a float32, C-contiguous N × inputs
    tensor: a ctypes call on the tensors' own memory, as little Python as possible around
    the kernel (at batch 1 every step of it shows in the latency)."""
    run = _LATENCY.get(plan)
    if run is None:
        kernel = _library().sparsecl_forward_rows
        packed, address = header(plan)
        classes = int(plan.head_bias.shape[0])
        dtype = plan.net.indices.dtype

        def run(x: Tensor, packed: np.ndarray = packed) -> Tensor:  # packed: kept alive
            n = x.shape[0]
            out = torch.empty((n, classes))
            _check(kernel(address, x.data_ptr(), x.shape[1], out.data_ptr(), 0, n), dtype)
            return out

        _LATENCY[plan] = run
    return run


def _check(status: int, dtype: np.dtype) -> None:
    if status != 0:
        raise ValueError(f"native forward refused the plan's {dtype} indices")
