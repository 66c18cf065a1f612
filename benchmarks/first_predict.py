"""Latency of the first Predict of a task, after its AddTask and after a server restart.

Starts its own server (embedded store in a temporary folder, loopback only) per backbone,
learns one small MNIST task, then times one-example Predict calls over gRPC: the first
one after AddTask returned, and the median of the next ``--calls``; then restarts the
server (SIGTERM, start on the same store) and times the same after a ListTasks call has
opened the new connection, so the first Predict measures the server alone.

    python benchmarks/first_predict.py
    python benchmarks/first_predict.py --backbones mlp:784-1000-1000 --calls 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.load import FAST, examples  # noqa: E402
from client import Client  # noqa: E402
from client.launch import Server  # noqa: E402
from sparse_engine.mnist import load_mnist  # noqa: E402


def predict_ms(client: Client, name: str, x: object) -> float:
    start = time.perf_counter()
    client.predict(name, x)
    return 1e3 * (time.perf_counter() - start)


def measure(backbone: str, calls: int) -> list[dict[str, object]]:
    """The first and the later Predict latencies after AddTask and after a restart."""
    mnist = load_mnist()
    x = mnist.x_test[:1]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as folder:
        for when in ("after AddTask", "after restart"):
            with (
                Server(Path(folder), backbone=backbone, cwd=ROOT) as server,
                Client(server.address, timeout=300) as client,
            ):
                if when == "after AddTask":
                    client.learn("A", examples(mnist, [0, 1], 600), **{**FAST, "k": 0.1})
                else:
                    client.tasks()  # the connection is open before the timed call
                first = predict_ms(client, "A", x)
                later = statistics.median(predict_ms(client, "A", x) for _ in range(calls))
                plan = client.task("A").plan_bytes
            rows.append(
                {
                    "backbone": backbone,
                    "when": when,
                    "first_ms": round(first, 2),
                    "later_median_ms": round(later, 2),
                    "plan_bytes": plan,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbones", nargs="*", default=["mlp:784-1000-1000", "mlp:784-2048-2048-2048"]
    )
    parser.add_argument("--calls", type=int, default=20, help="Predict calls after the first")
    args = parser.parse_args(argv)
    for backbone in args.backbones:
        for row in measure(backbone, args.calls):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
