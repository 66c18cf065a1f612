"""Continual-learning benchmark: ACC, BWT, time and bytes per task on Split and Permuted MNIST.

Runs every method on the same streams (real MNIST from ../shared/data), the same seeds
and the same backbone size, in one process, and writes one JSON object per (stream,
method) with at least: stream, method, acc, bwt, seconds, bytes_per_task.

    python benchmarks/continual.py          # full run, writes benchmarks/results/continual.json
    python benchmarks/continual.py --quick  # a few minutes: fewer examples, fewer tasks
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparse_engine.backbone import BackboneSpec  # noqa: E402
from sparse_engine.config import TaskConfig  # noqa: E402
from sparse_engine.data import TaskData  # noqa: E402
from sparse_engine.metrics import AccuracyMatrix  # noqa: E402
from sparse_engine.mnist import StreamTask, load_mnist, permuted_mnist, split_mnist  # noqa: E402
from sparse_engine.model import SparseCL  # noqa: E402


@dataclass(frozen=True)
class Row:
    """One method on one stream."""

    stream: str
    method: str
    acc: float
    bwt: float
    forgetting: float
    seconds: float
    bytes_per_task: float
    params_per_task: float
    matrix: list[list[float]]
    settings: dict[str, object]


@dataclass(frozen=True)
class Settings:
    backbone: str
    density: float
    k: float
    epochs: int
    retrain_epochs: int
    batch_size: int
    lr: float
    saliency: str
    seed: int


Method = Callable[[list[StreamTask], Settings], tuple[AccuracyMatrix, float, float]]


def run_sparsecl(stream: list[StreamTask], s: Settings) -> tuple[AccuracyMatrix, float, float]:
    """sparsecl: one backbone, one pruned subnetwork per task, owned weights frozen."""
    config = TaskConfig(
        density=s.density,
        k=s.k,
        epochs=s.epochs,
        retrain_epochs=s.retrain_epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        saliency=s.saliency,  # type: ignore[arg-type]
        seed=s.seed,
    )
    model = SparseCL(s.backbone, seed=s.seed)
    matrix = AccuracyMatrix(len(stream))
    for i, task in enumerate(stream):
        record = model.learn_task(task.name, task.train, task.val, config)
        for j in range(i + 1):
            matrix.record(i, j, model.accuracy(stream[j].name, stream[j].test))
        print(
            f"    {task.name}: val {record.val_accuracy:.4f}, owns {record.weights_owned}, "
            f"reads {record.weights_read}, free {min(record.free_capacity):.3f}, "
            f"{record.seconds:.0f}s",
            flush=True,
        )
    # stored per task: its own weight values (float32), the bit-packed mask, biases and head
    params, stored = [], []
    for task in model.tasks.values():
        owned = sum(int((m == task.record.id).sum()) for m in model.owners.maps)
        own = (
            sum(b.numel() for b in task.biases) + task.head_weight.numel() + task.head_bias.numel()
        )
        mask_bytes = sum(math.ceil(m.numel() / 8) for m in task.masks)
        params.append(owned + own)
        stored.append(4 * (owned + own) + mask_bytes)
    return matrix, sum(stored) / len(stored), sum(params) / len(params)


class DenseNet(nn.Module):
    """A dense MLP or CNN of the backbone's size with ReLU, for the reference methods."""

    def __init__(self, spec: BackboneSpec, classes: int) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        for layer in spec.layers:
            if layer.kind == "conv":
                out_c, in_c = layer.weight_shape[:2]
                layers += [nn.Conv2d(in_c, out_c, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
            else:
                layers += [
                    nn.Flatten(),
                    nn.Linear(layer.weight_shape[1], layer.weight_shape[0]),
                    nn.ReLU(),
                ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(spec.features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.reshape(x.shape[0], *self.spec.input_shape)))


def train_dense(net: nn.Module, data: TaskData, targets: torch.Tensor, s: Settings) -> None:
    optimizer = torch.optim.Adam(net.parameters(), lr=s.lr)
    generator = torch.Generator().manual_seed(s.seed)
    net.train()
    for _ in range(s.epochs + s.retrain_epochs):
        for x, y in TaskData(data.x, targets).batches(s.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
    net.eval()


@torch.no_grad()
def dense_accuracy(net: nn.Module, data: TaskData, classes: tuple[int, ...]) -> float:
    labels = torch.tensor(classes)
    predicted = torch.cat(
        [labels[net(data.x[i : i + 2048]).argmax(1)] for i in range(0, len(data), 2048)]
    )
    return float((predicted == data.y).float().mean())


def targets_of(data: TaskData, classes: tuple[int, ...]) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[int(c)] for c in data.y.tolist()])


def run_independent(stream: list[StreamTask], s: Settings) -> tuple[AccuracyMatrix, float, float]:
    """Upper bound without sharing: a dense network of the backbone's size per task."""
    spec = BackboneSpec.parse(s.backbone)
    torch.manual_seed(s.seed)
    matrix = AccuracyMatrix(len(stream))
    nets = []
    for i, task in enumerate(stream):
        classes = task.train.classes
        net = DenseNet(spec, len(classes))
        train_dense(net, task.train, targets_of(task.train, classes), s)
        nets.append((net, classes))
        for j in range(i + 1):
            matrix.record(i, j, dense_accuracy(nets[j][0], stream[j].test, nets[j][1]))
        print(f"    {task.name}: test {matrix.r[i, i]:.4f}", flush=True)
    params = sum(p.numel() for p in nets[0][0].parameters())
    return matrix, 4.0 * params, float(params)


METHODS: dict[str, Method] = {"sparsecl": run_sparsecl, "independent": run_independent}


def build_stream(name: str, quick: bool, seed: int) -> list[StreamTask]:
    mnist = load_mnist()
    if name == "split-mnist":
        return split_mnist(mnist, train_limit=2000 if quick else None, seed=seed)
    return permuted_mnist(
        mnist, tasks=3 if quick else 10, train_limit=6000 if quick else None, seed=seed
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (a few minutes)")
    parser.add_argument("--streams", default="split-mnist,permuted-mnist")
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
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the rows (default: benchmarks/results/continual.json "
        "for a full run, nothing for --quick)",
    )
    args = parser.parse_args(argv)
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
    )
    out = args.json or (None if args.quick else ROOT / "benchmarks" / "results" / "continual.json")
    rows: list[Row] = []
    print(f"machine: {machine()}")
    for stream_name in args.streams.split(","):
        stream = build_stream(stream_name, args.quick, args.seed)
        for method in args.methods.split(","):
            print(f"{stream_name} / {method}", flush=True)
            start = time.perf_counter()
            matrix, stored, params = METHODS[method](stream, settings)
            seconds = time.perf_counter() - start
            rows.append(
                Row(
                    stream_name,
                    method,
                    matrix.acc(),
                    matrix.bwt(),
                    matrix.forgetting(),
                    seconds,
                    stored,
                    params,
                    matrix.r.tolist(),
                    asdict(settings),
                )
            )
            print(matrix.format([t.name for t in stream]))
            print(
                f"  ACC {100 * matrix.acc():.2f}  BWT {100 * matrix.bwt():+.2f}  "
                f"{seconds:.0f}s  {stored / 1e6:.2f} MB/task",
                flush=True,
            )
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    print("\n| stream | method | ACC % | BWT % | seconds | MB per task | params per task |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.stream} | {r.method} | {100 * r.acc:.2f} | {100 * r.bwt:+.2f} | "
            f"{r.seconds:.0f} | {r.bytes_per_task / 1e6:.3f} | {r.params_per_task:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
