"""The k-WTA sparse inference engine: runs committed tasks from cached per-task plans.

Each linear layer does work in proportion to its non-zero weights times its active
inputs (weight sparsity × activation sparsity). The whole stack of linear layers, their
k-WTA and the head run in one call per thread of the native C++ kernel (``native``: built
at install for each x86-64 level, the best one for the CPU loaded), which releases the
GIL so the engine splits a batch over its own threads (``plan_paths`` names each layer's
path):
- below ``NATIVE_FROM`` samples (latency), one sample at a time, called with no PyTorch
  op on the way (~5-10 µs of Python around an 80-130 µs forward pass, by host); a sample
  with few non-zero inputs scatters their rows in the first layer (``plan.PackedNet``);
- from there, chunks of ``Kernel.lanes`` samples (one vector register: 16 with AVX-512,
  8 otherwise) held as vectors, so each non-zero weight updates them in one operation;
  a layer stored dense adds several dense rows at a time (measured faster than a BLAS
  matmul at batch 16 to 256).
Conv layers run in PyTorch (their kernels are small). Without the native kernel (not
built, or no build for this CPU) the engine warns once and runs the same plans through
PyTorch (``torch.sparse`` CSR matmuls), the "torch" backend. The path depends only on the
batch size and the plan, so a given request always gets bit-identical logits.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import native
from .backbone import BackboneSpec
from .config import BACKENDS, Backend
from .errors import UnknownTaskError, brief
from .kwta import kwinners
from .plan import LayerPlan, Plan, PlanMemory, compile_task
from .task import Task

LayerPath = Literal["conv", "torch", "gather", "spmm", "scatter", "rows"]

NATIVE_FROM = 3  # batch from which the vector kernel beats one sample at a time (measured)


@dataclass(frozen=True)
class EngineSettings:
    """Threads and backend. ``threads``/``interop_threads`` 0 keep PyTorch's current values;
    backend "auto" takes the native kernel when it loads, else torch."""

    threads: int = 0
    interop_threads: int = 0
    backend: Backend = "auto"
    parallel_min_batch: int = 8  # smaller batches run on the caller's thread only

    def __post_init__(self) -> None:
        if self.threads < 0 or self.interop_threads < 0:
            raise ValueError("threads and interop_threads must be >= 0")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "native" and native.KERNEL is None:
            raise ValueError(f"backend 'native' asked for but {fallback_reason()}")
        if self.parallel_min_batch < 1:
            raise ValueError("parallel_min_batch must be >= 1")


@dataclass(frozen=True)
class EngineInfo:
    """What runs inference: "native" or "torch", the kernel's instruction-set level (empty
    for torch), and why the torch fallback runs (empty when it was asked for or is off)."""

    backend: str
    isa: str
    warning: str


def fallback_reason() -> str:
    """Why the native kernel is not in use, as the fallback warning says it."""
    return f"the native inference kernel is unavailable: {native.PROBLEM}"


@functools.cache
def _warn_fallback() -> None:
    warnings.warn(
        f"{fallback_reason()}; the engine runs its torch.sparse fallback, several times slower",
        RuntimeWarning,
        stacklevel=4,
    )


def apply_thread_settings(settings: EngineSettings) -> None:
    """Set PyTorch's intra-op threads, and inter-op threads while PyTorch still allows it."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.interop_threads and torch.get_num_interop_threads() != settings.interop_threads:
        try:
            torch.set_num_interop_threads(settings.interop_threads)
        except RuntimeError:  # only settable before the first inter-op parallel work
            warnings.warn(
                "inter-op threads can only be set before PyTorch starts parallel work; "
                f"keeping {torch.get_num_interop_threads()}",
                stacklevel=2,
            )


def plan_paths(
    plan: Plan, batch: int, use_native: bool = native.KERNEL is not None
) -> tuple[LayerPath, ...]:
    """The kernel each layer of a plan runs with for a batch of this size.

    Chosen from the batch size and the plan only (never the thread count), so a sample's
    logits do not depend on how many threads share the batch.
    """

    def path(layer: LayerPlan) -> LayerPath:
        if layer.format == "conv" or not use_native:
            return "conv" if layer.format == "conv" else "torch"
        if layer.format == "output_major":
            return "gather" if batch < NATIVE_FROM else "spmm"
        return "scatter" if layer.format == "input_major" else "rows"

    return tuple(path(layer) for layer in plan.layers)


@dataclass(frozen=True, eq=False)
class _CacheEntry:
    task: Task
    plan: Plan


class InferenceEngine:
    """Compiles tasks into plans once, caches them, and runs inference through them."""

    def __init__(self, spec: BackboneSpec, settings: EngineSettings | None = None) -> None:
        self.spec = spec
        self._plans: dict[str, _CacheEntry] = {}
        self._dropped: set[int] = set()  # ids of deleted tasks (ids are never reused)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.settings = EngineSettings()
        self._kernel: native.Kernel | None = None
        self.configure(settings or EngineSettings())
        self.builds = 0  # plans compiled so far (a cache miss each)

    # ---- settings -------------------------------------------------------------------------
    def configure(self, settings: EngineSettings) -> None:
        """Apply thread counts and backend; the engine's pool is resized on next use."""
        apply_thread_settings(settings)
        with self._lock:
            self.settings = settings
            self._kernel = None if settings.backend == "torch" else native.KERNEL
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        if self._kernel is None and settings.backend == "auto":
            _warn_fallback()

    @property
    def threads(self) -> int:
        return self.settings.threads or torch.get_num_threads() or os.cpu_count() or 1

    @property
    def backend(self) -> Literal["native", "torch"]:
        """The backend in use: "auto" takes native when its kernel loads, else torch."""
        return "torch" if self._kernel is None else "native"

    def info(self) -> EngineInfo:
        """The backend in use, the native kernel's level, and the fallback's warning."""
        if self._kernel is not None:
            return EngineInfo("native", self._kernel.isa, "")
        return EngineInfo(
            "torch", "", "" if self.settings.backend == "torch" else fallback_reason()
        )

    # ---- plans ----------------------------------------------------------------------------
    def plan(self, task: Task, weights: Sequence[Tensor]) -> Plan:
        """The task's plan: compiled on first use, rebuilt only when the task object changes."""
        entry = self._plans.get(task.name)
        if entry is not None and entry.task is task:
            return entry.plan
        with self._lock:
            if task.record.id in self._dropped:  # looked up before its delete: never compile
                # it from weights the delete may already have re-initialised
                raise UnknownTaskError(f"task {brief(task.name)} was deleted")
            entry = self._plans.get(task.name)
            if entry is None or entry.task is not task:
                entry = _CacheEntry(task, compile_task(self.spec, weights, task))
                self._plans[task.name] = entry
                self.builds += 1
        return entry.plan

    def drop(self, task: Task) -> None:
        """Forget a deleted task's plan, and refuse to compile it from now on. Once this
        returns no compile of it is under way, so the caller may rewrite its free weights;
        a plan handed out before keeps answering from its own copy of the values."""
        with self._lock:
            self._dropped.add(task.record.id)
            entry = self._plans.get(task.name)
            if entry is not None and entry.task is task:
                del self._plans[task.name]

    def memory(self) -> dict[str, PlanMemory]:
        """Bytes held per cached plan."""
        return {name: entry.plan.memory for name, entry in self._plans.items()}

    # ---- inference ------------------------------------------------------------------------
    def logits(self, task: Task, weights: Sequence[Tensor], x: Tensor) -> Tensor:
        """Per-class scores of ``task`` for float32 inputs ``x`` (N × backbone input)."""
        return self.run(self.plan(task, weights), x)

    def run(self, plan: Plan, x: Tensor) -> Tensor:
        """Run a plan on a batch; inputs are assumed checked (float32, finite, right size)."""
        n = x.shape[0]
        kernel = self._kernel
        if (
            0 < n < NATIVE_FROM
            and kernel is not None
            and plan.n_conv == 0
            and x.dim() == 2
            and x.dtype == torch.float32
            and x.is_contiguous()
            and not x.requires_grad
        ):  # latency: straight to the one-sample kernel, no PyTorch op on the way
            return kernel.runner(plan)(x)
        with torch.no_grad():
            h = x.detach().reshape(n, *self.spec.input_shape).to(torch.float32)
            for layer in plan.layers[: plan.n_conv]:
                h = self._conv(layer, h)
            h = h.reshape(n, -1)
            if kernel is None or n == 0:
                return self._run_torch(plan, h)
            return self._run_native(kernel, plan, h.contiguous().numpy())

    def _conv(self, layer: LayerPlan, h: Tensor) -> Tensor:
        pre = F.max_pool2d(
            F.conv2d(h, layer.conv_weight(), torch.from_numpy(layer.bias), padding=1), 2
        )
        return _kwta(pre, layer)

    def _run_native(self, kernel: native.Kernel, plan: Plan, x: np.ndarray) -> Tensor:
        n = x.shape[0]
        logits = np.empty((n, plan.head_bias.shape[0]), dtype=np.float32)
        if n < NATIVE_FROM:
            kernel.forward_rows(plan, x, logits, 0, n)
        else:
            self._split(kernel.forward, n, plan, x, logits, align=kernel.lanes)
        return torch.from_numpy(logits)

    def _split(self, kernel: Callable[..., None], n: int, *args: Any, align: int = 1) -> None:
        """Run ``kernel(*args, lo, hi)`` over the batch, in one chunk per thread when large.

        Chunk bounds are multiples of ``align`` (the samples the kernel vectorises).
        """
        threads = min(self.threads, -(-n // align))
        if threads <= 1 or n < self.settings.parallel_min_batch:
            kernel(*args, 0, n)
            return
        bounds = [min(n, -(-n * t // (threads * align)) * align) for t in range(threads + 1)]
        pool = self._executor()
        futures: list[Future[None]] = [
            pool.submit(kernel, *args, bounds[t], bounds[t + 1]) for t in range(1, threads)
        ]
        kernel(*args, bounds[0], bounds[1])
        for f in futures:
            f.result()

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=max(1, self.threads - 1), thread_name_prefix="sparse-engine"
                    )
                pool = self._pool
        return pool

    def _run_torch(self, plan: Plan, h: Tensor) -> Tensor:
        """The pure-PyTorch backend: torch.sparse CSR matmuls on the same plan arrays."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            for layer in plan.layers[plan.n_conv :]:
                bias = torch.from_numpy(layer.bias)
                if layer.format == "dense_rows":
                    pre = torch.addmm(bias, h, torch.from_numpy(layer.values))
                elif layer.format == "output_major":
                    w = _csr_tensor(layer, (layer.units, layer.n_in))
                    pre = torch.sparse.mm(w, h.t()).t() + bias
                else:
                    w = _csr_tensor(layer, (layer.n_in, layer.units))
                    pre = torch.mm(h, w) + bias
                h = _kwta(pre, layer)
        return torch.addmm(
            torch.from_numpy(plan.head_bias), h, torch.from_numpy(plan.head_weight_t)
        )

    def close(self) -> None:
        """Stop the engine's threads."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def _csr_tensor(layer: LayerPlan, size: tuple[int, int]) -> Tensor:
    return torch.sparse_csr_tensor(
        torch.from_numpy(layer.indptr.astype(np.int64)),
        torch.from_numpy(layer.indices.astype(np.int64)),
        torch.from_numpy(layer.values),
        size=size,
        check_invariants=False,  # built from a valid CSR by compile_task
    )


def _kwta(pre: Tensor, layer: LayerPlan) -> Tensor:
    """The layer's k-WTA, as the reference (TaskNet) runs it: ``kwinners``."""
    return kwinners(pre, layer.kwta.duty_cycle, layer.k, layer.kwta.boost_strength)
