"""The sparse inference engine matches the dense masked forward pass, with compact cached plans."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from sparse_engine import engine as engine_module
from sparse_engine import native
from sparse_engine.backbone import Backbone, BackboneSpec
from sparse_engine.config import TaskConfig
from sparse_engine.engine import (
    NATIVE_FROM,
    EngineInfo,
    EngineSettings,
    InferenceEngine,
    plan_paths,
)
from sparse_engine.kwta import KWinnersState
from sparse_engine.mnist import Mnist
from sparse_engine.model import SparseCL
from sparse_engine.plan import (
    M_SCATTER_BELOW,
    M_T_VALUES,
    M_VALUES,
    Plan,
    compile_task,
)
from sparse_engine.synthetic import synthetic_task
from sparse_engine.task import Task, TaskNet

from .conftest import task_of

BATCHES = (1, 3, 16, 70)
MLP = "mlp:784-300-200-100"
CNN = "cnn:1x28x28-c8-c16-64"
CNN_RGB = "cnn:3x12x12-c6-40-30"

_backbones: dict[str, Backbone] = {}


def backbone(spec: str) -> Backbone:
    if spec not in _backbones:
        _backbones[spec] = Backbone(BackboneSpec.parse(spec), seed=3)
    return _backbones[spec]


# Hidden biases, relative to synthetic_task's. A unit whose mask reads none of the previous
# layer's winners holds its bias whatever the input; with synthetic_task's biases (0.1·N(0,1)),
# such units win the next k-WTA for every sample when few units are active (k = 1, or low
# density): the whole batch then gets the same logits, and a kernel mixing up samples passes.
# With small biases, the units fed by a sample's own winners win.
BIAS_SCALE = 1e-3


def varied(task: Task) -> Task:
    """``task`` with its hidden biases scaled by BIAS_SCALE, so samples get their own logits."""
    return dataclasses.replace(task, biases=tuple(BIAS_SCALE * b for b in task.biases))


def assert_rows_differ(logits: Tensor) -> None:
    """A batch whose samples all get the same logits cannot tell samples apart."""
    if len(logits) > 1:
        assert not bool((logits == logits[0]).all()), "every sample has the same logits"


def assert_matches_reference(
    engine: InferenceEngine, bb: Backbone, task: Task, batches: tuple[int, ...] = BATCHES
) -> None:
    reference = TaskNet(bb.spec, bb.weights, task)
    # (with seed len(name), one sample of 784-300-200-100 at 50 %/20 % had its 60th and 61st
    # boosted values 1 ulp apart: any sum order but BLAS's may pick the other unit)
    g = torch.Generator().manual_seed(len(task.name) + 1)
    for batch in batches:
        x = torch.randn(batch, *bb.spec.input_shape, generator=g)
        got, want = engine.logits(task, bb.weights, x), reference(x)
        assert_rows_differ(want)
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (
            f"batch {batch}: max |Δ| {(got - want).abs().max():.2e}"
        )
        assert torch.equal(got.argmax(1), want.argmax(1))


@pytest.mark.parametrize("backend", ["native", "torch"])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 0.05, 0.2, 1.0])
def test_mlp_logits_match_dense_masked_forward(backend: str, density: float, k: float) -> None:
    bb = backbone(MLP)
    task = varied(synthetic_task(bb, f"d{density}-k{k}", density, k, seed=int(100 * density)))
    engine = InferenceEngine(bb.spec, EngineSettings(backend=backend))  # type: ignore[arg-type]
    assert_matches_reference(engine, bb, task)


@pytest.mark.parametrize("densities", [(0.5, 0.1, 0.1), (0.1, 0.5, 0.1), (0.05, 0.05, 1.0)])
def test_plans_mixing_dense_stored_and_sparse_layers_match_the_reference(
    densities: tuple[float, ...],
) -> None:
    """The kernel's dense rows and its sparse layers in one plan, at every batch size."""
    bb = backbone(MLP)
    parts = [synthetic_task(bb, "mixed", d, 0.1, seed=14) for d in densities]
    task = varied(
        dataclasses.replace(parts[0], masks=tuple(t.masks[i] for i, t in enumerate(parts)))
    )
    engine = InferenceEngine(bb.spec, EngineSettings(backend="native"))
    formats = [layer.format for layer in engine.plan(task, bb.weights).layers]
    assert "dense_rows" in formats and len(set(formats)) > 1
    assert_matches_reference(engine, bb, task, batches=(1, 3, 16, 70, 256))


@pytest.mark.parametrize("spec", [CNN, CNN_RGB])
@pytest.mark.parametrize("density", [0.05, 0.2, 0.6])
@pytest.mark.parametrize("k", [0.1, 0.3, 1.0])
def test_cnn_logits_match_dense_masked_forward(spec: str, density: float, k: float) -> None:
    bb = backbone(spec)
    task = varied(synthetic_task(bb, f"c{density}-{k}", density, k, seed=7))
    assert_matches_reference(InferenceEngine(bb.spec), bb, task, batches=(1, 5, 40))


@pytest.mark.parametrize("boost_strength", [0.0, 3.0])
def test_boosted_winners_match_the_reference(boost_strength: float) -> None:
    """Strong boosting makes winners differ from the plain top-k; the engine must follow."""
    bb = backbone(MLP)
    task = varied(
        synthetic_task(bb, f"boost{boost_strength}", 0.1, 0.1, boost_strength=boost_strength)
    )
    assert_matches_reference(InferenceEngine(bb.spec), bb, task)


def test_every_path_is_exercised_and_chunking_does_not_change_a_bit() -> None:
    bb = backbone(MLP)
    task = synthetic_task(bb, "paths", 0.1, 0.1, seed=5)
    dense = synthetic_task(bb, "dense-paths", 0.6, 0.1, seed=5)
    engines = [
        InferenceEngine(bb.spec, EngineSettings(threads=t, parallel_min_batch=1, backend="native"))
        for t in (1, 2, 3)
    ]
    paths: set[str] = set()
    modes: set[str] = set()
    for t in (task, dense):
        plan = engines[0].plan(t, bb.weights)
        for batch in (*BATCHES, 9, 130):
            paths.update(plan_paths(plan, batch))
            modes.add("rows" if batch < NATIVE_FROM else "native")
            x = torch.randn(batch, 784)
            want = engines[0].logits(t, bb.weights, x)
            for engine in engines[1:]:
                assert torch.equal(engine.logits(t, bb.weights, x), want)
    assert paths == {"gather", "spmm", "scatter", "rows"}
    assert modes == {"rows", "native"}
    # dense-stored layers run in the kernel at every batch size, large ones included
    assert plan_paths(engines[0].plan(dense, bb.weights), 130) == ("rows",) * 3
    for engine in engines:
        engine.close()


def test_a_sample_gets_the_same_bits_whatever_else_is_in_its_batch() -> None:
    """The native kernel keeps each sample in its own vector lane, in the same order."""
    bb = backbone(MLP)
    task = synthetic_task(bb, "lanes", 0.1, 0.1, seed=9)
    engine = InferenceEngine(bb.spec, EngineSettings(backend="native"))
    x = torch.randn(64, 784, generator=torch.Generator().manual_seed(9))
    whole = engine.logits(task, bb.weights, x)
    for lo, hi in ((0, 16), (5, 21), (40, 64), (3, 63)):
        assert torch.equal(engine.logits(task, bb.weights, x[lo:hi]), whole[lo:hi])


def test_the_native_kernel_is_built_by_the_install() -> None:
    assert native.KERNEL is not None, f"no native kernel ({native.PROBLEM}): pip install -e ."
    assert InferenceEngine(backbone(MLP).spec).backend == "native"
    for isa in native.ISAS if native.X86 else (native.GENERIC,):  # every level is built
        assert importlib.util.find_spec(f"sparse_engine.{native.module_name(isa)}"), isa


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    return set(next(x for x in text.splitlines() if x.startswith("flags")).split(":")[1].split())


# What each x86-64 level needs beyond the one below it, as /proc/cpuinfo names it
LEVEL_FLAGS = {
    "x86-64-v2": {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"},
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}


@pytest.mark.skipif(not (native.X86 and Path("/proc/cpuinfo").exists()), reason="x86-64 Linux")
def test_the_kernel_loaded_is_the_best_level_this_cpu_runs() -> None:
    assert native.KERNEL is not None
    levels = ["x86-64"]
    for isa, flags in LEVEL_FLAGS.items():
        if flags <= cpu_flags() and len(levels) == native.ISAS.index(isa):
            levels.append(isa)
    assert native.KERNEL.isa == levels[-1]
    assert InferenceEngine(backbone(MLP).spec).info() == EngineInfo("native", levels[-1], "")
    assert native.KERNEL.lanes == (16 if native.KERNEL.isa == "x86-64-v4" else 8)


@pytest.mark.skipif(not native.X86, reason="one generic build on other architectures")
def test_every_level_this_cpu_runs_matches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Levels with FMA (v3, v4) give the same bits as each other, and so do those without."""
    assert native.KERNEL is not None
    bb = backbone(MLP)
    tasks = [
        varied(synthetic_task(bb, f"level-{d}", d, 0.1, seed=13)) for d in (0.1, 0.5)
    ]  # sparse layers; dense-stored ones
    x = torch.randn(40, 784, generator=torch.Generator().manual_seed(13))
    bits: dict[str, list[Tensor]] = {}
    for isa in native.ISAS[: native.ISAS.index(native.KERNEL.isa) + 1]:
        kernel, problem = native.load(isa)
        assert kernel is not None and kernel.isa == isa, problem
        monkeypatch.setattr(native, "KERNEL", kernel)
        engine = InferenceEngine(bb.spec)
        assert engine.info().isa == isa
        for task in tasks:
            assert_matches_reference(engine, bb, task, batches=(1, 2, 5, 40))
        bits[isa] = [engine.logits(t, bb.weights, x[:b]) for t in tasks for b in (1, 2, 40)]
    for a, b in (("x86-64", "x86-64-v2"), ("x86-64-v3", "x86-64-v4")):
        if a in bits and b in bits:
            assert all(torch.equal(p, q) for p, q in zip(bits[a], bits[b], strict=True)), (a, b)


def test_a_level_is_chosen_or_refused_by_the_environment() -> None:
    """SPARSECL_NATIVE_ISA picks a level at import; `python -m sparse_engine.native` says
    which one this host runs, or why there is none."""

    def which(isa: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SPARSECL_NATIVE_ISA": isa}
        return subprocess.run(
            [sys.executable, "-m", "sparse_engine.native"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    lowest = native.ISAS[0] if native.X86 else native.GENERIC
    chosen = which(lowest)
    assert chosen.returncode == 0, chosen.stderr
    assert f"native kernel {lowest}, 8 samples per vector" in chosen.stdout
    off = which("none")
    assert off.returncode == 1
    assert "no native kernel (turned off by SPARSECL_NATIVE_ISA=none)" in off.stderr
    assert native.load("x86-64-v9")[0] is None
    assert "is not one of" in native.load("x86-64-v9")[1]


def test_without_the_kernel_the_engine_warns_once_and_runs_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native, "KERNEL", None)
    monkeypatch.setattr(native, "PROBLEM", "not built here")
    engine_module._warn_fallback.cache_clear()
    bb = backbone(MLP)
    with pytest.warns(RuntimeWarning, match="kernel is unavailable: not built here; the engine"):
        engine = InferenceEngine(bb.spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: a second engine says nothing
        InferenceEngine(bb.spec)
    assert engine.info() == EngineInfo(
        "torch", "", "the native inference kernel is unavailable: not built here"
    )
    assert InferenceEngine(bb.spec, EngineSettings(backend="torch")).info().warning == ""
    assert_matches_reference(engine, bb, varied(synthetic_task(bb, "fallback", 0.1, 0.1)))
    with pytest.raises(ValueError, match=r"backend 'native' asked for but .* not built here"):
        EngineSettings(backend="native")


@pytest.mark.parametrize("n", [1, 7, 40, 300, 2048])
def test_kth_largest_is_exact_with_ties(n: int) -> None:
    """The kernel's k-WTA on values given as pre-activations (identity weights, zero
    biases, no boosting, identity head): exactly the k largest, ties to the lowest units,
    one sample at a time and in vector lanes; also where most values share the upper half
    of their order key (the selection's second stage) and among signed zeros."""
    g = torch.Generator().manual_seed(n)
    spec = BackboneSpec.parse(f"mlp:{n}-{n}")
    weights = [torch.eye(n)]
    for ties in ("none", "rounded", "close", "signed zeros"):
        values = torch.randn(5, n, generator=g)
        if ties == "rounded":
            values = (3 * values).round()
        elif ties == "close":  # most values share their upper 16 bits, some are equal
            values = 1 + torch.randint(0, max(2, n // 3), (5, n), generator=g) * 2.0**-23
        elif ties == "signed zeros":  # -0 and +0 are equal: ties among them
            values = torch.where(
                values.abs() < 0.5, torch.copysign(torch.zeros(()), values), values
            )
        for k in sorted({1, max(1, n // 10), max(1, n // 4), n}):
            task = synthetic_task(Backbone(spec, seed=0), f"kth-{k}", 1.0, k, boost_strength=0.0)
            task = dataclasses.replace(
                task,
                masks=(torch.eye(n, dtype=torch.bool),),
                biases=(torch.zeros(n),),
                kwta=(KWinnersState(k, 0.0, torch.zeros(n)),),
                head_weight=torch.eye(n),
                head_bias=torch.zeros(n),
            )
            engine = InferenceEngine(spec, EngineSettings(backend="native"))
            for batch in (1, 5):  # one sample at a time; vector lanes
                got = engine.logits(task, weights, values[:batch])
                for row, v in zip(got, values[:batch], strict=True):
                    ordered = v.sort(descending=True).values
                    threshold = ordered[k - 1]
                    winners = (v > threshold).nonzero().reshape(-1).tolist()
                    ties_won = (v == threshold).nonzero().reshape(-1)[: k - len(winners)]
                    want = torch.zeros(n)
                    keep = torch.tensor(sorted(winners + ties_won.tolist()), dtype=torch.long)
                    want[keep] = v[keep]
                    assert torch.equal(row, want), (n, k, ties, batch)


@pytest.mark.parametrize("units", [40_000, 600_000])
def test_k_wta_over_more_units_than_a_16_bit_count_block_matches_the_reference(
    units: int,
) -> None:
    """The selection counts in 16-bit blocks of 32768 units (vector lanes) or of 32768
    vectors of units (one sample at a time); past those sizes it still picks the
    reference's winners (one winner swapped moves a logit by ~1e-3, float noise ~1e-6)."""
    spec = BackboneSpec.parse(f"mlp:8-{units}")
    bb = Backbone(spec, seed=0)
    task = synthetic_task(bb, "wide-kwta", 1.0, 0.9, classes=3, boost_strength=0.0, seed=13)
    engine = InferenceEngine(spec, EngineSettings(backend="native"))
    reference = TaskNet(spec, bb.weights, task)
    x = torch.randn(17, 8, generator=torch.Generator().manual_seed(units))
    for batch in (1, 17):  # one sample at a time; vector lanes
        got, want = engine.logits(task, bb.weights, x[:batch]), reference(x[:batch])
        assert torch.allclose(got, want, rtol=0, atol=1e-4), batch


def test_plan_memory_is_within_one_and_a_half_csr_of_the_nonzeros() -> None:
    for spec in (MLP, CNN, "mlp:784-2048-2048-2048"):
        bb = backbone(spec)
        for density in (0.01, 0.05, 0.1, 0.2, 0.4, 1.0):
            task = synthetic_task(bb, "mem", density, 0.1)
            memory = compile_task(bb.spec, bb.weights, task).memory
            nnz = sum(int(m.sum()) for m in task.masks) + task.head_weight.numel()
            assert memory.nnz == nnz
            assert memory.weight_bytes <= memory.bound_bytes, (spec, density, memory)
            # per-unit vectors (biases, boost) come on top; they matter only for tiny masks
            if density >= 0.1:
                assert memory.total_bytes <= memory.bound_bytes, (spec, density, memory)
    # the 3×2048 MLP at 10 %: no dense copy of its 10.0 M weights (40 MB) per task
    big = compile_task(bb.spec, bb.weights, synthetic_task(bb, "big", 0.1, 0.1)).memory
    assert big.total_bytes < 0.25 * 4 * sum(w.numel() for w in bb.weights)


def dense_of(plan: Plan, offsets: Sequence[int] | np.ndarray, shape: tuple[int, int]) -> Tensor:
    """The CSR at ``offsets`` (values, indices, indptr) in the plan's packed arrays, dense."""
    v, i, p = (int(o) for o in offsets)
    net = plan.net
    indptr = torch.from_numpy(net.indptr[p : p + shape[0] + 1].astype(np.int64))
    nnz = int(indptr[-1])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            indptr,
            torch.from_numpy(net.indices[i : i + nnz].astype(np.int64)),
            torch.from_numpy(net.values[v : v + nnz]),
            size=shape,
            check_invariants=True,  # a malformed CSR fails here
        ).to_dense()


def test_the_first_layer_carries_its_transpose_for_sparse_inputs() -> None:
    bb = backbone(MLP)
    plan = compile_task(bb.spec, bb.weights, synthetic_task(bb, "copy", 0.1, 0.1, seed=3))
    meta = plan.net.meta
    assert meta[0, M_SCATTER_BELOW] == 392  # half of the 784 inputs
    assert (meta[1:, M_SCATTER_BELOW] == 0).all()  # k-WTA-fed layers are input-major already
    w = dense_of(plan, meta[0, M_VALUES : M_VALUES + 3], (300, 784))
    wt = dense_of(plan, meta[0, M_T_VALUES : M_T_VALUES + 3], (784, 300))
    assert torch.equal(wt, w.t())
    assert plan.memory.total_bytes <= plan.memory.bound_bytes


def test_the_transpose_is_left_out_when_it_would_break_the_memory_budget() -> None:
    bb = backbone("mlp:784-32")  # one layer: a second copy of it is over 1.5 × its CSR
    plan = compile_task(bb.spec, bb.weights, synthetic_task(bb, "no-copy", 0.1, 0.1))
    assert plan.net.meta[0, M_SCATTER_BELOW] == 0
    assert plan.memory.total_bytes <= plan.memory.bound_bytes


@pytest.mark.parametrize("nonzero", [0.0, 0.002, 0.19, 0.49, 0.51, 1.0])
def test_sparse_inputs_match_the_reference_one_sample_at_a_time(nonzero: float) -> None:
    """Below half the inputs non-zero, a sample's first layer scatters rows of the copy."""
    bb = backbone(MLP)
    task = synthetic_task(bb, f"sparse-input-{nonzero}", 0.1, 0.1, seed=8)
    engine = InferenceEngine(bb.spec, EngineSettings(backend="native"))
    reference = TaskNet(bb.spec, bb.weights, task)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 784, generator=g)
    x[:, torch.randperm(784, generator=g)[round(nonzero * 784) :]] = 0.0
    for batch in (x[:1], x):
        got, want = engine.logits(task, bb.weights, batch), reference(batch)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got - want).abs().max()
        assert torch.equal(got.argmax(1), want.argmax(1))


def test_plans_are_cached_and_rebuilt_only_when_the_task_changes() -> None:
    bb = backbone(MLP)
    engine = InferenceEngine(bb.spec)
    a = synthetic_task(bb, "a", 0.1, 0.1, seed=1)
    b = synthetic_task(bb, "b", 0.1, 0.1, seed=2)
    plan_a = engine.plan(a, bb.weights)
    x = torch.randn(9, 784)
    before = engine.logits(a, bb.weights, x)
    engine.logits(b, bb.weights, x)
    assert engine.plan(a, bb.weights) is plan_a
    assert engine.builds == 2
    assert torch.equal(engine.logits(a, bb.weights, x), before)
    assert set(engine.memory()) == {"a", "b"}
    replaced = synthetic_task(bb, "a", 0.2, 0.1, seed=9)  # same name, a new task
    assert engine.plan(replaced, bb.weights) is not plan_a
    assert engine.builds == 3
    engine.drop(b)
    assert set(engine.memory()) == {"a"}
    assert engine.plan(replaced, bb.weights) is engine.plan(replaced, bb.weights)


def test_concurrent_callers_get_their_own_answers() -> None:
    bb = backbone(MLP)
    engine = InferenceEngine(bb.spec, EngineSettings(threads=2, parallel_min_batch=2))
    tasks = [synthetic_task(bb, f"c{i}", 0.1, 0.1, seed=i) for i in range(3)]
    inputs = [torch.randn(20, 784) for _ in tasks]
    want = [TaskNet(bb.spec, bb.weights, t)(x) for t, x in zip(tasks, inputs, strict=True)]
    errors: list[str] = []

    def call(i: int) -> None:
        for _ in range(5):
            got = engine.logits(tasks[i], bb.weights, inputs[i])
            if not torch.allclose(got, want[i], rtol=1e-5, atol=1e-6):
                errors.append(f"task {i}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert errors == []
    engine.close()


def test_settings_control_threads_and_refuse_nonsense() -> None:
    before = torch.get_num_threads()
    try:
        engine = InferenceEngine(backbone(MLP).spec, EngineSettings(threads=1))
        assert torch.get_num_threads() == 1
        assert engine.threads == 1
        engine.configure(EngineSettings(threads=2))
        assert engine.threads == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        EngineSettings(threads=-1)
    with pytest.raises(ValueError):
        EngineSettings(backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EngineSettings(backend="numba")  # type: ignore[arg-type]


def test_inputs_that_require_grad_or_are_not_contiguous_work() -> None:
    bb = backbone(MLP)
    task = synthetic_task(bb, "grad", 0.1, 0.1)
    x = torch.randn(784, 6).t().requires_grad_(True)
    want = TaskNet(bb.spec, bb.weights, task)(x.detach())
    got = InferenceEngine(bb.spec).logits(task, bb.weights, x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_learned_tasks_run_through_the_engine_and_stay_bit_identical(mnist: Mnist) -> None:
    """SparseCL.logits/predict go through the engine; later tasks change no plan or output."""
    model = SparseCL("mlp:784-128-128")
    config = TaskConfig(density=0.1, k=0.1, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3)
    first = task_of(mnist, [0, 1], limit=300)
    model.learn_task("first", first, config=config)
    probe = task_of(mnist, list(range(10)), limit=100).x
    got, want = model.logits("first", probe), model.reference_logits("first", probe)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.predict("first", probe), torch.tensor([0, 1])[want.argmax(1)])
    assert model.accuracy("first", first) > 0.9
    plan = model.engine.plan(model.task("first"), model.backbone.weights)
    model.learn_task("second", task_of(mnist, [2, 3], limit=300), config=config)
    assert model.engine.plan(model.task("first"), model.backbone.weights) is plan
    after: Tensor = model.logits("first", probe)
    assert torch.equal(after, got)
    assert torch.allclose(
        model.logits("second", probe),
        model.reference_logits("second", probe),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_wide_layers_with_32_bit_indices_match_the_reference(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers wider than 65536 units get uint32 indices; the same plans, forced here."""
    from sparse_engine import plan as plan_module

    monkeypatch.setattr(plan_module, "INDEX16_MAX", 1)
    bb = backbone(MLP)
    task = varied(synthetic_task(bb, "wide-indices", 0.1, 0.1, seed=11))
    engine = InferenceEngine(bb.spec, EngineSettings(backend=backend))  # type: ignore[arg-type]
    assert engine.plan(task, bb.weights).net.indices.dtype == np.uint32
    assert_matches_reference(engine, bb, task)


class LowestUnitsWin(torch.nn.Module):
    """k-WTA of all-equal values: the k lowest units win."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, h: Tensor) -> Tensor:
        out = torch.zeros_like(h)
        out[:, : self.k] = h[:, : self.k]
        return out


def test_ties_at_the_k_th_value_go_to_the_lowest_units() -> None:
    """A zero input makes every first-layer unit equal to its bias: all tie at k-WTA."""
    bb = backbone(MLP)
    task = synthetic_task(bb, "ties-native", 0.1, 0.1, boost_strength=0.0, seed=4)
    task.biases[0].fill_(0.5)
    engine = InferenceEngine(bb.spec, EngineSettings(backend="native"))
    reference = TaskNet(bb.spec, bb.weights, task)
    reference.kwta[0] = LowestUnitsWin(task.kwta[0].k)
    for batch in (1, 2, 16):
        x = torch.zeros(batch, 784)
        assert torch.allclose(engine.logits(task, bb.weights, x), reference(x), atol=1e-6)


def test_the_one_sample_path_gives_the_same_bits_for_any_input_layout() -> None:
    """Batches of one or two skip PyTorch on their way to the kernel unless the input is
    not a plain contiguous float32 matrix; both ways give the same bits."""
    bb = backbone(MLP)
    task = synthetic_task(bb, "layout", 0.1, 0.1, seed=6)
    engine = InferenceEngine(bb.spec, EngineSettings(backend="native"))
    x = torch.randn(2, 784, generator=torch.Generator().manual_seed(6))
    want = engine.logits(task, bb.weights, x)
    for other in (x.t().contiguous().t(), x.clone().requires_grad_(True), x.reshape(2, 28, 28)):
        assert torch.equal(engine.logits(task, bb.weights, other), want)
    assert torch.equal(engine.logits(task, bb.weights, x[1:]), want[1:])


def cut_after(bb: Backbone, task: Task, depth: int) -> tuple[BackboneSpec, list[Tensor], Task]:
    """The backbone and task up to hidden layer ``depth`` with an identity head (zero bias):
    the compiled plan's logits are then that layer's k-WTA output itself."""
    spec = BackboneSpec(bb.spec.kind, bb.spec.input_shape, bb.spec.hidden[:depth])
    units = spec.layers[-1].units
    cut = dataclasses.replace(
        task,
        masks=task.masks[:depth],
        biases=task.biases[:depth],
        kwta=task.kwta[:depth],
        head_weight=torch.eye(units),
        head_bias=torch.zeros(units),
    )
    return spec, list(bb.weights[:depth]), cut


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("density", [0.1, 0.6])  # sparse layers; dense-stored ones
def test_compiled_kernels_keep_exactly_k_winners_per_sample_after_each_hidden_layer(
    density: float, depth: int
) -> None:
    """Batches of 1-2 (one-sample path), 3-5 (vector lanes), 40 (several lane groups)."""
    bb = backbone(MLP)
    full = varied(synthetic_task(bb, f"winners-{density}", density, 0.1, seed=12))
    spec, weights, task = cut_after(bb, full, depth)
    k = task.kwta[-1].k
    assert 1 < k < spec.layers[-1].units
    engine = InferenceEngine(spec, EngineSettings(backend="native"))
    reference = TaskNet(spec, weights, task)
    modes = set()
    g = torch.Generator().manual_seed(depth)
    for batch in (1, 2, 3, 5, 40):
        modes.add("rows" if batch < NATIVE_FROM else "native")
        x = torch.randn(batch, 784, generator=g)
        got, want = engine.logits(task, weights, x), reference(x)
        assert_rows_differ(want)
        assert torch.equal((got != 0).sum(1), torch.full((batch,), k)), f"batch {batch}"
        assert torch.equal(got != 0, want != 0), f"batch {batch}: other winners"
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert modes >= {"rows", "native"}
