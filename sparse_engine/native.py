"""The compiled blocked forward pass (sparse_engine/native/forward.cpp), loaded with ctypes.

setup.py builds it at install time for the installing machine; when it is missing (no
compiler) ``LIBRARY`` is None and the engine uses its numba kernels. ctypes releases
the GIL during the call, so the engine's threads run chunks of a batch in parallel.
"""

from __future__ import annotations

import ctypes
import importlib.util
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .plan import Plan

_P = ctypes.c_void_p
_I = ctypes.c_int64


def _load() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec(f"{__package__}._native")
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(spec.origin)
    lib.sparsecl_lanes.restype = ctypes.c_int
    lib.sparsecl_lanes.argtypes = []
    lib.sparsecl_forward.restype = ctypes.c_int
    lib.sparsecl_forward.argtypes = [
        _P,
        _I,
        _P,
        _I,
        _P,
        _P,
        _I,
        _P,
        _P,
        _P,
        _P,
        _I,
        _P,
        _I,
        _P,
        _I,
        _I,
    ]
    return lib


LIBRARY = _load()
# samples one vector holds: chunk bounds that are multiples of it fill whole vectors
LANES = LIBRARY.sparsecl_lanes() if LIBRARY is not None else 16


def forward(plan: Plan, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """Logits of rows ``lo..hi`` of ``x`` (float32, C-contiguous) into ``out`` (N × classes)."""
    if LIBRARY is None:
        raise RuntimeError("the native engine kernel is not built (see setup.py)")
    net = plan.net
    head_t = plan.head_weight_t
    status = LIBRARY.sparsecl_forward(
        x.ctypes.data,
        x.shape[1],
        net.meta.ctypes.data,
        net.meta.shape[0],
        net.values.ctypes.data,
        net.indices.ctypes.data,
        net.indices.itemsize,
        net.indptr.ctypes.data,
        net.bias.ctypes.data,
        net.boost.ctypes.data,
        head_t.ctypes.data,
        head_t.shape[0],
        plan.head_bias.ctypes.data,
        plan.head_bias.shape[0],
        out.ctypes.data,
        lo,
        hi,
    )
    if status != 0:
        raise ValueError(f"native forward refused the plan's {net.indices.dtype} indices")
