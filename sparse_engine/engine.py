"""The k-WTA sparse inference engine: runs committed tasks from cached per-task plans.

Each linear layer does work in proportion to its non-zero weights times its active
inputs (weight sparsity × activation sparsity), through compiled kernels that release
the GIL so the engine splits a batch over its own threads. The whole stack of linear
layers, their k-WTA and the head run in one kernel call per thread, in the native C++
kernel (``native``; built at install):
- below ``NATIVE_FROM`` samples (latency), one sample at a time, called with no PyTorch
  op on the way (~5-10 µs of Python around an 80-130 µs forward pass, by host); a sample
  with few non-zero inputs scatters their rows in the first layer (``plan.PackedNet``);
- from there, chunks of ``native.LANES`` samples (one vector register: 16 with AVX-512,
  8 with AVX2) held as vectors, so each non-zero weight updates them in one operation.
Without the native kernel, numba's ``forward_rows`` and ``forward_blocked`` (from
``BLOCK_FROM`` samples) do the same.
A plan with a layer stored dense switches to per-layer kernels and a BLAS matmul for that
layer from ``DENSE_MATMUL_FROM`` samples. Conv layers run in PyTorch (their kernels are
small). Without numba the engine runs the same plans through PyTorch (``torch.sparse``
CSR matmuls), which is also the fallback backend. The path depends only on the batch
size and the plan, so a given request always gets bit-identical logits.
"""

from __future__ import annotations

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
from .plan import LayerPlan, Plan, PlanMemory, compile_task
from .task import Task

try:
    from . import kernels
except ImportError:  # pragma: no cover - numba is a dependency; the torch backend still works
    kernels = None  # type: ignore[assignment]

Backend = Literal["auto", "native", "numba", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "native", "numba", "torch")
LayerPath = Literal["conv", "scatter", "gather", "spmm", "rows", "dense"]
Mode = Literal["rows", "blocked", "native", "layers"]

BLOCK_FROM = 4  # batch from which the one-call forward runs in chunks of samples
NATIVE_FROM = 3  # batch from which the native kernel beats one sample at a time (measured)
SPMM_FROM = 4  # batch from which output-major layers are vectorised over samples (per layer)
DENSE_HEAD_FROM = 16  # batch from which the head is a BLAS matmul
DENSE_MATMUL_FROM = 16  # batch from which dense-stored layers use a BLAS matmul


@dataclass(frozen=True)
class EngineSettings:
    """Threads and backend. ``threads``/``interop_threads`` 0 keep PyTorch's current values."""

    threads: int = 0
    interop_threads: int = 0
    backend: Backend = "auto"
    parallel_min_batch: int = 8  # smaller batches run on the caller's thread only

    def __post_init__(self) -> None:
        if self.threads < 0 or self.interop_threads < 0:
            raise ValueError("threads and interop_threads must be >= 0")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend in ("numba", "native") and kernels is None:
            raise ValueError(f"backend {self.backend!r} asked for but numba is not installed")
        if self.backend == "native" and native.LIBRARY is None:
            raise ValueError("backend 'native' asked for but its kernel is not built (setup.py)")
        if self.parallel_min_batch < 1:
            raise ValueError("parallel_min_batch must be >= 1")


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


def layer_path(layer: LayerPlan, batch: int) -> LayerPath:
    """The per-layer kernel a layer runs with in the "layers" mode (numba backend)."""
    if layer.format == "conv":
        return "conv"
    if layer.format == "input_major":
        return "scatter"
    if layer.format == "output_major":
        return "spmm" if batch >= SPMM_FROM else "gather"
    return "dense" if batch >= DENSE_MATMUL_FROM else "rows"


def run_mode(plan: Plan, batch: int, use_native: bool = native.LIBRARY is not None) -> Mode:
    """How the compiled backends run a plan's linear layers for a batch of this size.

    Chosen from the batch size, the plan and whether the native kernel is built (never the
    thread count), so a sample's logits do not depend on how many threads share the batch.
    """
    if any(layer_path(layer, batch) == "dense" for layer in plan.layers):
        return "layers"
    if use_native and batch >= NATIVE_FROM:
        return "native"
    return "blocked" if batch >= BLOCK_FROM else "rows"


_FUSED_PATHS: dict[tuple[Mode, str], LayerPath] = {
    ("rows", "output_major"): "gather",
    ("rows", "input_major"): "scatter",
    ("rows", "dense_rows"): "rows",
    ("blocked", "output_major"): "spmm",
    ("blocked", "input_major"): "scatter",
    ("blocked", "dense_rows"): "rows",
    ("native", "output_major"): "spmm",
    ("native", "input_major"): "scatter",
    ("native", "dense_rows"): "rows",
}


def plan_paths(
    plan: Plan, batch: int, use_native: bool = native.LIBRARY is not None
) -> tuple[LayerPath, ...]:
    """The kernel each layer of a plan runs with for a batch of this size (compiled backends)."""
    mode = run_mode(plan, batch, use_native)
    if mode == "layers":
        return tuple(layer_path(layer, batch) for layer in plan.layers)
    return tuple(
        "conv" if layer.format == "conv" else _FUSED_PATHS[mode, layer.format]
        for layer in plan.layers
    )


_KERNELS = {
    "scatter": "input_major_layer",
    "gather": "output_major_layer",
    "spmm": "output_major_batch_layer",
    "rows": "dense_rows_layer",
}


@dataclass(frozen=True, eq=False)
class _CacheEntry:
    task: Task
    plan: Plan


class InferenceEngine:
    """Compiles tasks into plans once, caches them, and runs inference through them."""

    def __init__(self, spec: BackboneSpec, settings: EngineSettings | None = None) -> None:
        self.spec = spec
        self._plans: dict[str, _CacheEntry] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.settings = EngineSettings()
        self.configure(settings or EngineSettings())
        self.builds = 0  # plans compiled so far (a cache miss each)

    # ---- settings -------------------------------------------------------------------------
    def configure(self, settings: EngineSettings) -> None:
        """Apply thread counts and backend; the engine's pool is resized on next use."""
        apply_thread_settings(settings)
        with self._lock:
            self.settings = settings
            self._native = self.backend == "native"
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    @property
    def threads(self) -> int:
        return self.settings.threads or torch.get_num_threads() or os.cpu_count() or 1

    @property
    def backend(self) -> Literal["native", "numba", "torch"]:
        """The backend in use: "auto" takes native, else numba, else torch."""
        if self.settings.backend == "torch" or kernels is None:
            return "torch"
        if self.settings.backend == "numba" or native.LIBRARY is None:
            return "numba"
        return "native"

    # ---- plans ----------------------------------------------------------------------------
    def plan(self, task: Task, weights: Sequence[Tensor]) -> Plan:
        """The task's plan: compiled on first use, rebuilt only when the task object changes."""
        entry = self._plans.get(task.name)
        if entry is not None and entry.task is task:
            return entry.plan
        with self._lock:
            entry = self._plans.get(task.name)
            if entry is None or entry.task is not task:
                entry = _CacheEntry(task, compile_task(self.spec, weights, task))
                self._plans[task.name] = entry
                self.builds += 1
        return entry.plan

    def drop(self, name: str) -> None:
        """Forget a task's plan (the task was removed)."""
        with self._lock:
            self._plans.pop(name, None)

    def memory(self) -> dict[str, PlanMemory]:
        """Bytes held per cached plan."""
        return {name: entry.plan.memory for name, entry in self._plans.items()}

    def warm_up(self) -> None:
        """Compile the kernels now (numba caches them on disk), not on the first request."""
        if self.backend != "torch":
            kernels.warm_up()

    # ---- inference ------------------------------------------------------------------------
    def logits(self, task: Task, weights: Sequence[Tensor], x: Tensor) -> Tensor:
        """Per-class scores of ``task`` for float32 inputs ``x`` (N × backbone input)."""
        return self.run(self.plan(task, weights), x)

    def run(self, plan: Plan, x: Tensor) -> Tensor:
        """Run a plan on a batch; inputs are assumed checked (float32, finite, right size)."""
        n = x.shape[0]
        if (
            0 < n < NATIVE_FROM
            and self._native
            and plan.n_conv == 0
            and x.dim() == 2
            and x.dtype == torch.float32
            and x.is_contiguous()
            and not x.requires_grad
        ):  # latency: straight to the one-sample kernel, no PyTorch op on the way
            return native.latency_runner(plan)(x)
        backend = self.backend
        with torch.no_grad():
            h = x.detach().reshape(n, *self.spec.input_shape).to(torch.float32)
            for layer in plan.layers[: plan.n_conv]:
                h = self._conv(layer, h)
            h = h.reshape(n, -1)
            linear = plan.layers[plan.n_conv :]
            if backend == "torch" or n == 0:
                return self._run_torch(plan, linear, h)
            return self._run_numba(plan, linear, h.contiguous().numpy())

    def _conv(self, layer: LayerPlan, h: Tensor) -> Tensor:
        pre = F.max_pool2d(
            F.conv2d(h, layer.conv_weight(), torch.from_numpy(layer.bias), padding=1), 2
        )
        return _kwta_torch(pre.reshape(pre.shape[0], -1), layer).reshape(pre.shape)

    def _run_numba(self, plan: Plan, linear: Sequence[LayerPlan], h: np.ndarray) -> Tensor:
        n = h.shape[0]
        mode = run_mode(plan, n, self.backend == "native")
        if mode == "native":
            logits = np.empty((n, plan.head_bias.shape[0]), dtype=np.float32)
            self._split(native.forward, n, plan, h, logits, align=native.LANES)
            return torch.from_numpy(logits)
        if mode == "rows" and self.backend == "native":
            logits = np.empty((n, plan.head_bias.shape[0]), dtype=np.float32)
            native.forward_rows(plan, h, logits, 0, n)
            return torch.from_numpy(logits)
        if mode != "layers":
            logits = np.empty((n, plan.head_bias.shape[0]), dtype=np.float32)
            kernel = kernels.forward_rows if mode == "rows" else kernels.forward_blocked
            args = (*plan.net.arrays(), plan.head_weight_t, plan.head_bias, logits)
            self._split(kernel, n, h, *args, align=kernels.LANES if mode == "blocked" else 1)
            return torch.from_numpy(logits)
        for layer in linear:
            out = np.empty((n, layer.units), dtype=np.float32)
            path = layer_path(layer, n)
            if path == "dense":
                pre = torch.addmm(
                    torch.from_numpy(layer.bias),
                    torch.from_numpy(h),
                    torch.from_numpy(layer.values),
                )
                self._split(kernels.kwta_rows, n, pre.numpy(), layer.boost, layer.k, out)
            else:
                src = np.ascontiguousarray(h.T) if path == "spmm" else h
                weight = (
                    (layer.values,)
                    if path == "rows"
                    else (layer.indptr, layer.indices, layer.values)
                )
                kernel = getattr(kernels, _KERNELS[path])
                self._split(kernel, n, src, *weight, layer.bias, layer.boost, layer.k, out)
            h = out
        if n >= DENSE_HEAD_FROM:
            return torch.addmm(
                torch.from_numpy(plan.head_bias),
                torch.from_numpy(h),
                torch.from_numpy(plan.head_weight_t),
            )
        logits = np.empty((n, plan.head_bias.shape[0]), dtype=np.float32)
        self._split(kernels.sparse_head, n, h, plan.head_weight_t, plan.head_bias, logits)
        return torch.from_numpy(logits)

    def _split(self, kernel: Callable[..., None], n: int, *args: Any, align: int = 1) -> None:
        """Run ``kernel(*args, lo, hi)`` over the batch, in one chunk per thread when large.

        Chunk bounds are multiples of ``align`` (the samples a blocked kernel vectorises).
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

    def _run_torch(self, plan: Plan, linear: Sequence[LayerPlan], h: Tensor) -> Tensor:
        """The pure-PyTorch backend: torch.sparse CSR matmuls on the same plan arrays."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            for layer in linear:
                bias = torch.from_numpy(layer.bias)
                if layer.format == "dense_rows":
                    pre = torch.addmm(bias, h, torch.from_numpy(layer.values))
                elif layer.format == "output_major":
                    w = _csr_tensor(layer, (layer.units, layer.n_in))
                    pre = torch.sparse.mm(w, h.t()).t() + bias
                else:
                    w = _csr_tensor(layer, (layer.n_in, layer.units))
                    pre = torch.mm(h, w) + bias
                h = _kwta_torch(pre, layer)
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


def _kwta_torch(pre: Tensor, layer: LayerPlan) -> Tensor:
    """k-WTA on N × units pre-activations with the plan's boost (same ops as ``kwinners``)."""
    if layer.k >= layer.units:
        return pre
    winners = (pre * torch.from_numpy(layer.boost)).topk(layer.k, dim=1, sorted=False).indices
    return torch.zeros_like(pre).scatter(1, winners, pre.gather(1, winners))
