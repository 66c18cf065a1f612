"""Load test: concurrent Predict calls for several tasks while tasks are being added.

Loopback only, bounded in requests and seconds, stops by itself. Without --address it
starts its own server (embedded store in a temporary folder) and learns --tasks small
MNIST tasks first; with --address it uses tasks already there (--names). Every worker
checks its answers against the task's scores taken before the load: a changed answer
counts as an error, as does any failed call.

    python benchmarks/load.py                       # 8 workers, 30 s, prints JSON
    python benchmarks/load.py --seconds 3 --address 127.0.0.1:PORT --names A,B
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import Client  # noqa: E402
from client.launch import Server  # noqa: E402
from server.config import is_loopback  # noqa: E402
from sparse_engine.mnist import Mnist, load_mnist  # noqa: E402

FAST = dict(density=0.1, k=0.25, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3)


def examples(mnist: Mnist, digits: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isin(mnist.y_train, digits)
    return mnist.x_train[keep][:n], mnist.y_train[keep][:n]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(
    address: str,
    names: list[str],
    mnist: Mnist,
    *,
    workers: int,
    seconds: float,
    max_requests: int,
    batch: int,
    add_epochs: int,
) -> dict[str, Any]:
    """Hammer ``names`` with Predict from ``workers`` threads while tasks are added."""
    probe = mnist.x_test[:batch]
    with Client(address, timeout=60) as client:
        expected = {name: client.predict(name, probe).scores.tobytes() for name in names}
    latencies: list[list[float]] = [[] for _ in range(workers)]
    errors: list[str] = []
    budget = threading.Semaphore(max_requests)
    stop = threading.Event()
    added: list[dict[str, Any]] = []

    def predict(worker: int) -> None:
        with Client(address, timeout=30) as client:
            i = worker
            while not stop.is_set() and budget.acquire(blocking=False):
                name = names[i % len(names)]
                i += 1
                start = time.perf_counter()
                try:
                    scores = client.predict(name, probe).scores.tobytes()
                except Exception as e:
                    errors.append(f"{name}: {e}")
                    continue
                latencies[worker].append(time.perf_counter() - start)
                if scores != expected[name]:
                    errors.append(f"{name}: scores changed under load")

    def add() -> None:
        """Add tasks one after another for as long as the load lasts."""
        with Client(address, timeout=600) as client:
            while not stop.is_set():
                name = f"load-{os.getpid()}-{len(added)}"
                x, y = examples(mnist, [8, 9], 2000)
                start = time.perf_counter()
                try:
                    info = client.learn(name, (x, y), **{**FAST, "epochs": add_epochs})
                    added.append(dict(task=name, state=info.state))
                except Exception as e:
                    added.append(dict(task=name, state="error", error=str(e)))
                added[-1]["seconds"] = round(time.perf_counter() - start, 2)

    adder = threading.Thread(target=add)
    threads = [threading.Thread(target=predict, args=(w,)) for w in range(workers)]
    began = time.perf_counter()
    adder.start()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    adder.join()
    flat = [v for per in latencies for v in per]
    return {
        "workers": workers,
        "tasks": names,
        "batch": batch,
        "seconds": round(elapsed, 2),
        "requests": len(flat),
        "errors": len(errors),
        "error_examples": errors[:5],
        "per_second": round(len(flat) / elapsed, 1),
        "p50_ms": round(1000 * percentile(flat, 50), 2),
        "p99_ms": round(1000 * percentile(flat, 99), 2),
        "tasks_added_during_load": added,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a running server on loopback (default: start one)")
    parser.add_argument("--names", default="", help="with --address: its tasks, comma-separated")
    parser.add_argument("--tasks", type=int, default=3, help="tasks to learn first (own server)")
    parser.add_argument("--backbone", default="mlp:784-256-256")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=32, help="examples per Predict")
    parser.add_argument("--add-epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    mnist = load_mnist()
    with tempfile.TemporaryDirectory(prefix="sparsecl-load-") as folder, ExitStack() as stack:
        if args.address:
            if not is_loopback(args.address.rsplit(":", 1)[0]):
                parser.error("the load test only runs against a loopback address")
            address, names = args.address, [n for n in args.names.split(",") if n]
            if not names:
                parser.error("--address needs --names")
        else:
            server = stack.enter_context(Server(Path(folder), backbone=args.backbone, cwd=ROOT))
            address, names = (
                server.address,
                [f"digits-{2 * i}{2 * i + 1}" for i in range(args.tasks)],
            )
            with Client(address, timeout=600) as client:
                for i, name in enumerate(names):
                    client.learn(name, examples(mnist, [2 * i, 2 * i + 1], 2000), **FAST)
        result = run(
            address,
            names,
            mnist,
            workers=args.workers,
            seconds=args.seconds,
            max_requests=args.max_requests,
            batch=args.batch,
            add_epochs=args.add_epochs,
        )
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    result["backbone"] = args.backbone if not args.address else "(the running server's)"
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    added_ok = all(t["state"] == "committed" for t in result["tasks_added_during_load"])
    return 0 if result["errors"] == 0 and result["requests"] > 0 and added_ok else 1


if __name__ == "__main__":
    sys.exit(main())
