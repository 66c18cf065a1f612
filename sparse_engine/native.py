"""The compiled forward passes (sparse_engine/native/forward.cpp), loaded with ctypes.

setup.py builds the kernel once per x86-64 level (``ISAS``; one ``generic`` build on other
architectures), so one wheel or image runs on any x86-64 host at the speed of that host:
this module asks the baseline build which levels the CPU and its OS support and loads the
best build (``SPARSECL_NATIVE_ISA`` picks a lower one, or ``none``). When none loads,
``KERNEL`` is None and ``PROBLEM`` says why; the engine then runs its torch fallback. The
calls release the GIL, so the engine's threads run chunks of a batch in parallel.

A plan's arrays reach the kernel as one int64 header of pointers and sizes, packed once
per plan: a ctypes call converting a dozen numpy arrays to pointers costs ~15 µs, a
tenth of a one-sample forward pass.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .plan import M_COLS

if TYPE_CHECKING:
    from .plan import Plan

# The x86-64 levels, level n at index n - 1 (what the kernel's sparsecl_cpu_level counts).
ISAS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")
GENERIC = "generic"  # the one build on other architectures
X86 = platform.machine().lower() in ("x86_64", "amd64")

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

_HEADERS: weakref.WeakKeyDictionary[Plan, tuple[np.ndarray, int]] = weakref.WeakKeyDictionary()


def module_name(isa: str) -> str:
    """The extension module built for ``isa`` (setup.py names them so)."""
    return "_native_" + isa.replace("-", "_")


class Unavailable(Exception):
    """Why a build of the kernel cannot run here."""


@dataclass(frozen=True, eq=False)
class Kernel:
    """One build of the kernel, loaded: its instruction-set level and samples per vector."""

    isa: str
    lanes: int
    library: ctypes.CDLL
    _runners: weakref.WeakKeyDictionary[Plan, Callable[[Tensor], Tensor]] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False
    )

    def forward(self, plan: Plan, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
        """The logits of rows ``lo..hi`` of ``x`` (float32, C-contiguous) into ``out``
        (N × classes), ``lanes`` samples per vector (batches from a few samples up)."""
        status = self.library.sparsecl_forward(
            header(plan)[1], x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi
        )
        _check(status, plan.net.indices.dtype)

    def forward_rows(self, plan: Plan, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
        """The logits of rows ``lo..hi``, one sample at a time (small batches: latency)."""
        status = self.library.sparsecl_forward_rows(
            header(plan)[1], x.ctypes.data, x.shape[1], out.ctypes.data, lo, hi
        )
        _check(status, plan.net.indices.dtype)

    def runner(self, plan: Plan) -> Callable[[Tensor], Tensor]:
        """The plan's one-sample path as a function of a float32, C-contiguous N × inputs
        tensor: a ctypes call on the tensors' own memory, as little Python as possible
        around the kernel (at batch 1 every step of it shows in the latency)."""
        run = self._runners.get(plan)
        if run is None:
            kernel = self.library.sparsecl_forward_rows
            packed, address = header(plan)
            classes = int(plan.head_bias.shape[0])
            dtype = plan.net.indices.dtype

            def run(x: Tensor, packed: np.ndarray = packed) -> Tensor:  # packed: kept alive
                n = x.shape[0]
                out = torch.empty((n, classes))
                _check(kernel(address, x.data_ptr(), x.shape[1], out.data_ptr(), 0, n), dtype)
                return out

            self._runners[plan] = run
        return run


def _open(isa: str) -> Kernel:
    spec = importlib.util.find_spec(f"{__package__}.{module_name(isa)}")
    if spec is None or spec.origin is None:
        raise Unavailable(
            f"its {isa} build ({module_name(isa)}) is not installed: the install found no "
            "C++ compiler or the compile failed (`pip install -v` shows why)"
        )
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError as error:
        raise Unavailable(f"{spec.origin} does not load: {error}") from error
    for name in ("sparsecl_lanes", "sparsecl_header_cols", "sparsecl_meta_cols"):
        if not hasattr(lib, name):
            raise Unavailable(f"{spec.origin} is from another version: reinstall sparsecl")
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = []
    if lib.sparsecl_header_cols() != H_COLS or lib.sparsecl_meta_cols() != M_COLS:
        raise Unavailable(f"{spec.origin} is from another version: reinstall sparsecl")
    lib.sparsecl_cpu_level.restype = ctypes.c_int
    lib.sparsecl_cpu_level.argtypes = []
    for name in ("sparsecl_forward", "sparsecl_forward_rows"):  # header, x, x_cols, out, lo, hi
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [_P, _P, _I, _P, _I, _I]
    return Kernel(isa, lib.sparsecl_lanes(), lib)


def load(isa: str | None = None) -> tuple[Kernel | None, str]:
    """The build for ``isa`` ("none": no kernel), by default the best this CPU runs, or
    None and why not."""
    if isa == "none":
        return None, "turned off by SPARSECL_NATIVE_ISA=none"
    if isa is not None and isa not in (ISAS if X86 else (GENERIC,)):
        return None, f"SPARSECL_NATIVE_ISA={isa} is not one of {ISAS if X86 else (GENERIC,)}"
    try:
        if not X86:
            return _open(GENERIC), ""
        level = _open(ISAS[0]).library.sparsecl_cpu_level()
        if isa is not None and ISAS.index(isa) >= level:
            return None, f"this CPU runs up to {ISAS[level - 1]}, not {isa}"
        problem = ""
        for candidate in reversed(ISAS[:level] if isa is None else (isa,)):
            try:
                return _open(candidate), ""
            except Unavailable as error:  # a lower level may still be built
                problem = problem or str(error)
        return None, problem
    except Unavailable as error:
        return None, str(error)


KERNEL, PROBLEM = load(os.environ.get("SPARSECL_NATIVE_ISA") or None)


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


def _check(status: int, dtype: np.dtype) -> None:
    if status != 0:
        raise ValueError(f"the native kernel refused the plan's {dtype} indices")


if __name__ == "__main__":  # python -m sparse_engine.native: the build this host runs
    if KERNEL is None:
        raise SystemExit(f"sparse_engine: no native kernel ({PROBLEM})")
    print(f"sparse_engine: native kernel {KERNEL.isa}, {KERNEL.lanes} samples per vector")
