"""Continual-learning benchmark: sparsecl side by side with Avalanche's baselines.

On the same streams (Split-MNIST, 5 tasks, and Permuted MNIST, 10 tasks, task id given,
built with Avalanche's generators from the real MNIST in ../shared/data), seeds and
backbone size, in one run, trains and evaluates sparsecl (as an Avalanche strategy),
Avalanche's Naive, EWC, LwF, Replay and PackNet, and two references: `independent` (a
dense network of the backbone's size per task) and `joint` (one network on all tasks at
once). Avalanche's EvaluationPlugin computes accuracy, forgetting and BWT for all of them.
Each (stream, method) runs in its own process, so its peak memory is its own.

    python benchmarks/continual.py          # full run, writes benchmarks/results/continual.json
    python benchmarks/continual.py --quick  # a few minutes: fewer examples, fewer tasks

Rows hold at least: stream, method, acc, bwt, seconds, bytes_per_task.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from sparse_engine.backbone import BackboneSpec  # noqa: E402
from sparse_engine.config import DEVICES, TaskConfig  # noqa: E402
from sparse_engine.device import resolve_device  # noqa: E402
from sparse_engine.metrics import AccuracyMatrix  # noqa: E402
from sparse_engine.mnist import StreamTask, load_mnist, permuted_mnist, split_mnist  # noqa: E402

STREAMS = ("split-mnist", "permuted-mnist")
METHODS = ("sparsecl", "naive", "ewc", "lwf", "replay", "packnet", "independent", "joint")


@dataclass(frozen=True)
class Settings:
    """What every method shares: backbone size, epochs, optimizer, seed."""

    backbone: str
    density: float
    k: float
    epochs: int
    retrain_epochs: int
    batch_size: int
    lr: float
    saliency: str
    seed: int
    quick: bool
    ewc_lambda: float = 100.0
    lwf_alpha: float = 1.0
    lwf_temperature: float = 2.0
    replay_memory: int = 1000
    packnet_prune: float = 0.5
    device: str = "auto"  # where every method trains (sparse_engine.config.DEVICES)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.retrain_epochs


@dataclass(frozen=True)
class Row:
    """One method on one stream."""

    stream: str
    method: str
    acc: float
    bwt: float | None
    forgetting: float | None
    seconds: float
    seconds_per_task: float
    bytes_per_task: float
    params_per_task: float
    peak_rss_mb: float
    matrix: list[list[float | None]]


def build_stream(name: str, quick: bool, seed: int) -> list[StreamTask]:
    """The stream's tasks as tensors (normalized MNIST, 10 % of train held out)."""
    mnist = load_mnist()
    if name == "split-mnist":
        return split_mnist(mnist, train_limit=2000 if quick else None, seed=seed)
    return permuted_mnist(
        mnist, tasks=3 if quick else 10, train_limit=6000 if quick else None, seed=seed
    )


def avalanche_benchmark(stream: list[StreamTask]) -> Any:
    """The stream as an Avalanche benchmark with task labels 0..T-1 (Avalanche's generator)."""
    from avalanche.benchmarks import tensors_benchmark

    return tensors_benchmark(
        train_tensors=[(t.train.x, t.train.y) for t in stream],
        test_tensors=[(t.test.x, t.test.y) for t in stream],
        task_labels=list(range(len(stream))),
    )


def body(spec: BackboneSpec) -> nn.Sequential:
    """Dense hidden layers of the backbone's size, with ReLU."""
    layers: list[nn.Module] = [nn.Unflatten(1, spec.input_shape)] if spec.kind == "cnn" else []
    for layer in spec.layers:
        if layer.kind == "conv":
            out_c, in_c = layer.weight_shape[:2]
            layers += [nn.Conv2d(in_c, out_c, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
        else:
            layers += [nn.Flatten(), nn.Linear(layer.weight_shape[1], layer.weight_shape[0])]
            layers += [nn.ReLU()]
    return nn.Sequential(*layers)


def multi_head_net(spec: BackboneSpec) -> nn.Module:
    """The baselines' network: the backbone's dense body and one head per task label."""
    from avalanche.models import MultiHeadClassifier, MultiTaskModule
    from avalanche.models.packnet import PackNetModule

    class TaskHeads(MultiHeadClassifier, PackNetModule):
        """Per-task heads that PackNet leaves alone: each task owns its head outright.

        Avalanche 0.6's PackNetModel would wrap the heads' nn.Linear and then fail in
        MultiHeadClassifier.adaptation ('_PnLinear' has no 'in_features').
        """

        def _prune(self, prune_proportion: float) -> None:
            pass

        def _freeze_pruned(self) -> None:
            pass

        def _activate_task(self, task_id: int) -> None:
            pass

    class MultiHeadNet(MultiTaskModule):
        def __init__(self) -> None:
            super().__init__()
            self.features = body(spec)
            self.classifier = TaskHeads(spec.features)

        def forward(self, x: torch.Tensor, task_labels: Any) -> torch.Tensor:  # type: ignore[override]
            return self.classifier(self.features(x.flatten(1)), task_labels)

    return MultiHeadNet()


def task_aware_packnet(net: nn.Module) -> nn.Module:
    """Avalanche's PackNetModel, passing task labels on so each task keeps its own head.

    Avalanche 0.6's PackNetModel.forward drops the task labels before calling the wrapped
    network, which leaves PackNet a single shared head; the PackNet paper uses one per task.
    """
    from avalanche.models.packnet import PackNetModel

    class TaskAwarePackNet(PackNetModel):
        def forward(self, input: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
            first = task_id[0]
            if not bool(task_id.eq(first).all()):
                raise ValueError("PackNet evaluates one task per mini-batch")
            self.activate_task(min(int(first), self.task_count))
            return self.wrappee(input, task_id)

    return TaskAwarePackNet(net)


def independent_nets(spec: BackboneSpec) -> nn.Module:
    """One dense network (body and head) per task label: the upper bound without sharing."""
    from avalanche.models import MultiTaskModule

    class IndependentNets(MultiTaskModule):
        def __init__(self) -> None:
            super().__init__()
            self.nets = nn.ModuleDict()

        def adaptation(self, experience: Any) -> None:
            super().adaptation(experience)
            for label in experience.task_labels:
                if str(label) not in self.nets:
                    classes = max(experience.classes_in_this_experience) + 1
                    self.nets[str(label)] = nn.Sequential(
                        body(spec), nn.Linear(spec.features, classes)
                    )

        def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
            return self.nets[str(task_label)](x.flatten(1))

    return IndependentNets()


def evaluator() -> Any:
    from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    return EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        loggers=[],
    )


def make_strategy(
    method: str, spec: BackboneSpec, s: Settings, tasks: int
) -> tuple[Any, nn.Module]:
    """The Avalanche strategy of ``method`` and the module whose parameters it trains."""
    from avalanche.training import EWC, LwF, Naive, PackNet, Replay
    from avalanche.training.supervised import JointTraining

    from sparse_engine.strategy import SparseCLStrategy

    common: dict[str, Any] = {
        "device": resolve_device(s.device),  # the baselines and the dense references
        "train_mb_size": s.batch_size,
        "train_epochs": s.total_epochs,
        "eval_mb_size": 1024,
        "evaluator": evaluator(),
        "criterion": nn.CrossEntropyLoss(),
    }
    if method == "sparsecl":
        config = TaskConfig(
            density=s.density,
            k=s.k,
            epochs=s.epochs,
            retrain_epochs=s.retrain_epochs,
            batch_size=s.batch_size,
            lr=s.lr,
            saliency=s.saliency,  # type: ignore[arg-type]
            seed=s.seed,
            reuse="all",  # the default its rows were measured with (now auto)
        )
        strategy = SparseCLStrategy(
            backbone=spec,
            config=config,
            val_fraction=0.0,
            eval_mb_size=1024,
            evaluator=evaluator(),
            seed=s.seed,
            train_device=s.device,  # trains there; the CPU engine evaluates
        )
        return strategy, strategy.model
    model = independent_nets(spec) if method == "independent" else multi_head_net(spec)
    if method == "packnet":
        model = task_aware_packnet(model)
    # independent nets start empty (one is added per task); Avalanche re-binds the
    # optimizer to the model's parameters before every experience
    params = list(model.parameters()) or [nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam(params, lr=s.lr)
    if method in ("naive", "independent"):
        return Naive(model=model, optimizer=optimizer, **common), model
    if method == "ewc":
        return EWC(model=model, optimizer=optimizer, ewc_lambda=s.ewc_lambda, **common), model
    if method == "lwf":
        return LwF(
            model=model,
            optimizer=optimizer,
            alpha=s.lwf_alpha,
            temperature=s.lwf_temperature,
            **common,
        ), model
    if method == "replay":
        return Replay(model=model, optimizer=optimizer, mem_size=s.replay_memory, **common), model
    if method == "packnet":
        return PackNet(
            model=model,
            optimizer=optimizer,
            post_prune_epochs=s.retrain_epochs,
            prune_proportion=s.packnet_prune,
            **common,
        ), model
    if method == "joint":
        return JointTraining(model=model, optimizer=optimizer, **common), model
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def stored_bytes(method: str, strategy: Any, model: nn.Module, tasks: int) -> tuple[float, float]:
    """Bytes and parameters stored per task once the stream is learned."""
    if method == "sparsecl":
        from sparse_engine.state import dumps

        # what the server stores per task: its safetensors blob (packed mask, owned values,
        # biases, k-WTA state, head)
        states = [strategy.learner.task(name) for name in strategy.learner.tasks]
        stored = [len(dumps(state)) for state in states]
        params = [
            sum(t.numel() for t in (*st.own_values, *st.biases, st.head_weight, st.head_bias))
            for st in states
        ]
        return sum(stored) / len(stored), sum(params) / len(params)
    total = sum(p.numel() for p in model.parameters())
    if method == "independent":
        return 4.0 * total / tasks, total / tasks
    # one shared network for the whole stream (PackNet adds a byte of owner per weight)
    extra = sum(p.numel() for p in model.parameters()) if method == "packnet" else 0
    return (4.0 * total + extra) / tasks, total / tasks


def matrix_from(results: list[dict[str, float]], tasks: int) -> AccuracyMatrix:
    """R[i][j] from the per-experience accuracies Avalanche reported after each training exp."""
    matrix = AccuracyMatrix(tasks)
    for i, metrics in enumerate(results):
        for j in range(i + 1):
            key = f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"
            matrix.record(i, j, metrics[key])
    return matrix


def run_method(stream_name: str, method: str, s: Settings) -> dict[str, Any]:
    """Train ``method`` on the stream, evaluating the whole test stream after each task."""
    torch.manual_seed(s.seed)
    stream = build_stream(stream_name, s.quick, s.seed)
    bench = avalanche_benchmark(stream)
    spec = BackboneSpec.parse(s.backbone)
    tasks = len(stream)
    strategy, model = make_strategy(method, spec, s, tasks)
    start = time.perf_counter()
    if method == "joint":
        strategy.train(bench.train_stream)
        last = strategy.eval(bench.test_stream)
        matrix = AccuracyMatrix(1)
        matrix.r = np.array(
            [
                [
                    last[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"]
                    for j in range(tasks)
                ]
            ]
        )
        bwt: float | None = None
        forgetting: float | None = None
    else:
        results = []
        for i, experience in enumerate(bench.train_stream):
            strategy.train(experience)
            results.append(strategy.eval(bench.test_stream[: i + 1]))  # the tasks seen
        matrix = matrix_from(results, tasks)
        bwt = float(results[-1]["StreamBWT/eval_phase/test_stream"])
        forgetting = float(results[-1]["StreamForgetting/eval_phase/test_stream"])
    seconds = time.perf_counter() - start
    stored, params = stored_bytes(method, strategy, model, tasks)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = Row(
        stream_name,
        method,
        matrix.acc(),
        bwt,
        forgetting,
        seconds,
        seconds / tasks,
        stored,
        params,
        peak,
        [[None if math.isnan(v) else v for v in row] for row in matrix.r.tolist()],
    )
    return asdict(row)


def _child(stream: str, method: str, s: Settings, queue: Any) -> None:
    torch.set_num_threads(int(os.environ.get("SPARSECL_THREADS", torch.get_num_threads())))
    try:
        queue.put(run_method(stream, method, s))
    except BaseException as e:  # report, don't hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})
        raise


def run_isolated(stream: str, method: str, s: Settings) -> dict[str, Any]:
    """``run_method`` in a fresh process, so peak memory and state are the method's own."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(stream, method, s, queue), daemon=True)
    process.start()
    try:
        result = queue.get()
        process.join()
    finally:  # the parent stopped (Ctrl-C, SIGTERM): stop the child too, never orphan it
        if process.is_alive():
            process.terminate()
    if "error" in result:
        raise RuntimeError(f"{stream}/{method} failed: {result['error']}")
    return result


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Heatmaps of R per method and ACC versus tasks seen, one figure per stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for stream in sorted({r["stream"] for r in rows}):
        mine = [r for r in rows if r["stream"] == stream and len(r["matrix"]) > 1]
        fig, axes = plt.subplots(1, len(mine), figsize=(3 * len(mine), 3), squeeze=False)
        for ax, r in zip(axes[0], mine, strict=True):
            m = np.array(r["matrix"], dtype=float) * 100
            ax.imshow(m, vmin=50, vmax=100, cmap="viridis")
            ax.set_title(f"{r['method']}\nACC {100 * r['acc']:.1f}")
            ax.set_xlabel("task")
            ax.set_ylabel("after learning")
        fig.tight_layout()
        path = out / f"{stream}-matrix.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in mine:
            m = np.array(r["matrix"], dtype=float)
            acc = [100 * m[i, : i + 1].mean() for i in range(len(m))]
            ax.plot(range(1, len(m) + 1), acc, marker="o", label=r["method"])
        ax.set_xlabel("tasks seen")
        ax.set_ylabel("ACC % over tasks seen")
        ax.set_title(stream)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{stream}-acc.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def log_to_mlflow(rows: list[dict[str, Any]], files: list[Path], s: Settings, uri: str) -> str:
    """One MLflow run with the settings, ACC/BWT per stream and method, plots and rows."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("sparsecl-benchmarks")
    with mlflow.start_run(run_name="continual") as run:
        mlflow.log_params(asdict(s))
        for r in rows:
            key = f"{r['stream']}.{r['method']}"
            mlflow.log_metric(f"{key}.acc", r["acc"])
            mlflow.log_metric(f"{key}.seconds", r["seconds"])
            if r["bwt"] is not None:
                mlflow.log_metric(f"{key}.bwt", r["bwt"])
        for f in files:
            mlflow.log_artifact(str(f))
        return str(run.info.run_id)


def device_option(parser: argparse.ArgumentParser, what: str = "where tasks train") -> None:
    """The training benchmarks' ``--device`` (the choices of sparse_engine.config.DEVICES)."""
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help=f"{what}: auto = a CUDA GPU when there is one, else the CPU; cuda = the GPU "
        "(refused without one); inference stays on the CPU engine (default auto)",
    )


def chosen_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """``--device`` resolved, or the parser's error saying why not (no GPU for cuda)."""
    try:
        return resolve_device(name)
    except ValueError as e:
        parser.error(f"--device {name}: {e}")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} CPUs, {threads} threads, torch {torch.__version__}"


def fmt(v: float | None, scale: float = 100.0, sign: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{scale * v:+.2f}" if sign else f"{scale * v:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| stream | method | ACC % | BWT % | seconds | s/task | MB per task | params per task "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stream']} | {r['method']} | {fmt(r['acc'])} | {fmt(r['bwt'], sign=True)} | "
            f"{r['seconds']:.0f} | {r['seconds_per_task']:.1f} | {r['bytes_per_task'] / 1e6:.3f} | "
            f"{r['params_per_task']:,.0f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (a few minutes)")
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--backbone", default="mlp:784-1000-1000")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--k", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--saliency", default="taylor", choices=("magnitude", "obd", "taylor"))
    parser.add_argument("--seed", type=int, default=0)
    device_option(parser, "where every method trains")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the rows (default: benchmarks/results/continual.json for a full "
        "run, benchmarks/results/continual-quick.json for --quick)",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in the JSON file and run only the missing (stream, method)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI for the run (default: sqlite under ./sparsecl-data)",
    )
    args = parser.parse_args(argv)
    device = chosen_device(parser, args.device)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the children's cleanup
    settings = Settings(
        args.backbone,
        args.density,
        args.k,
        args.epochs,
        args.retrain_epochs,
        args.batch_size,
        args.lr,
        args.saliency,
        args.seed,
        args.quick,
        device=args.device,
    )
    out = args.json or RESULTS / ("continual-quick.json" if args.quick else "continual.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = json.loads(out.read_text()) if args.append and out.exists() else []
    done = {(r["stream"], r["method"]) for r in rows}
    print(f"machine: {machine()}; training on {device}", flush=True)
    started = time.perf_counter()
    for stream in args.streams.split(","):
        for method in args.methods.split(","):
            if (stream, method) in done:
                continue
            row = run_isolated(stream, method, settings)
            rows.append(row)
            print(
                f"{stream:15s} {method:12s} ACC {fmt(row['acc'])}  BWT "
                f"{fmt(row['bwt'], sign=True)}  {row['seconds']:.0f}s",
                flush=True,
            )
            out.write_text(json.dumps(rows, indent=1) + "\n")
    files = [out, *plot(rows, out.parent)]
    uri = args.tracking_uri or f"sqlite:///{ROOT / 'sparsecl-data' / 'mlflow.db'}"
    (ROOT / "sparsecl-data").mkdir(exist_ok=True)
    run_id = log_to_mlflow(rows, files, settings, uri)
    print(
        f"\n{table(rows)}\n\nwhole run {time.perf_counter() - started:.0f}s; "
        f"MLflow run {run_id} at {uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
