"""The Open Inference Protocol (KServe v2) next to sparsecl's own Predict, on one server and
the same inputs: gRPC ModelInfer (``tritonclient.grpc``), HTTP/REST infer
(``tritonclient.http``, binary tensors: its default) and Predict (``client.Client``).

Loopback only; everything runs on this machine and stops by itself. One ``sparsecl serve``
(``client.launch.Server``, the embedded store in a temporary folder, ``--http-port 0``)
learns one small MNIST task (0 vs 1, ``serving.py``'s FAST settings), then the three
protocols are measured in interleaved rounds (each round runs every cell for every
protocol, the protocols' order rotating from round to round, so that a drift of the
shared machine falls on all three alike):

- ``latency``: one example a call, one client, ``--calls`` sequential calls: p50/p99 ms;
- ``loop``: one example a call, ``--clients`` closed-loop client threads (each its own
  client and connection) for ``--seconds``: calls/s;
- ``batch``: 64 examples a call, one client sequentially and ``--clients`` closed-loop
  threads: examples/s.

Client-side costs are included: each protocol is called the way its users call it (the
Python clients build the request and decode the answer on every call). Before timing, the
answers are checked to be bit for bit the same over the three (scores' bytes and labels).

    python benchmarks/inference_protocol.py            # 3 rounds, 4 s a loop cell
    python benchmarks/inference_protocol.py --quick    # 2 rounds, 2 s a loop cell
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving import FAST, MODEL, machine, percentile_ms  # noqa: E402
from benchmarks.serving import learn as learn_task  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROTOCOLS = ("predict", "grpc", "http")
LABELS = {
    "predict": "sparsecl Predict (gRPC, client.Client)",
    "grpc": "KServe v2 ModelInfer (gRPC, tritonclient.grpc)",
    "http": "KServe v2 infer (HTTP/REST binary, tritonclient.http)",
}
HTTP_LINE = re.compile(r"sparsecl http on (\S+)")

Call = Callable[[], tuple[np.ndarray, np.ndarray]]  # -> (scores, labels)


def caller(protocol: str, grpc_address: str, http_address: str, x: np.ndarray) -> Call:
    """A function making one call of ``protocol`` with inputs ``x`` (its own client and
    connection): returns (scores, labels)."""
    if protocol == "predict":
        from client import Client

        client = Client(grpc_address, timeout=60)

        def predict() -> tuple[np.ndarray, np.ndarray]:
            p = client.predict(MODEL, x)
            return p.scores, p.labels

        return predict
    if protocol == "grpc":
        import tritonclient.grpc as triton

        grpc_client = triton.InferenceServerClient(grpc_address)

        def grpc_infer() -> tuple[np.ndarray, np.ndarray]:
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = grpc_client.infer(MODEL, [tensor], client_timeout=60)
            return result.as_numpy("scores"), result.as_numpy("label")

        return grpc_infer
    import tritonclient.http as triton_http

    http_client = triton_http.InferenceServerClient(http_address, network_timeout=60)

    def http_infer() -> tuple[np.ndarray, np.ndarray]:
        tensor = triton_http.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)  # binary_data=True: the binary tensor extension
        outputs = [
            triton_http.InferRequestedOutput("scores"),
            triton_http.InferRequestedOutput("label"),
        ]
        result = http_client.infer(MODEL, [tensor], outputs=outputs)
        return result.as_numpy("scores"), result.as_numpy("label")

    return http_infer


def sequential(make: Callable[[], Call], calls: int) -> list[float]:
    """Seconds of each of ``calls`` sequential calls (after 10 untimed ones)."""
    call = make()
    for _ in range(10):
        call()
    times = []
    for _ in range(calls):
        before = time.perf_counter()
        call()
        times.append(time.perf_counter() - before)
    return times


def closed_loop(make: Callable[[], Call], clients: int, seconds: float) -> tuple[int, int]:
    """``clients`` threads calling back to back for ``seconds`` after a 0.5 s warm-up:
    (calls that started and ended in the window, errors)."""
    counts = [0] * clients
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    window: list[float] = []

    def client(i: int) -> None:
        call = make()  # in the thread: tritonclient.http's gevent hub is per thread
        call()
        ready.wait()
        start, end = window
        while (before := time.perf_counter()) < end:
            try:
                call()
            except Exception as e:
                errors.append(repr(e))
                continue
            if before >= start and time.perf_counter() <= end:
                counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window += [now + 0.5, now + 0.5 + seconds]
    ready.wait()
    for t in threads:
        t.join()
    return sum(counts), len(errors)


def learn(address: str, examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Learns the task (serving.py's); returns one example and 64 (float32 in [0, 1], test
    digits 0/1)."""
    from sparse_engine.mnist import load_mnist

    learn_task(address, examples)
    mnist = load_mnist()
    test = mnist.x_test[np.isin(mnist.y_test, [0, 1])][:64].reshape(64, -1)
    x = test.astype(np.float32) / (255.0 if test.dtype == np.uint8 else 1.0)
    return np.ascontiguousarray(x[:1]), np.ascontiguousarray(x)


def check_identical(grpc_address: str, http_address: str, x: np.ndarray) -> dict[str, Any]:
    """The three answers for ``x``: scores' bytes and labels the same over the protocols."""
    answers = {p: caller(p, grpc_address, http_address, x)() for p in PROTOCOLS}
    scores, labels = answers["predict"]
    for protocol, (s, lab) in answers.items():
        if s.dtype != np.float32 or s.tobytes() != scores.tobytes():
            raise SystemExit(f"{protocol}: scores differ from Predict's")
        if not np.array_equal(lab.astype(np.int64), labels.astype(np.int64)):
            raise SystemExit(f"{protocol}: labels differ from Predict's")
    return {"examples": len(x), "bit_identical": True, "labels": labels.tolist()[:8]}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| protocol | 1 ex. p50 ms | 1 ex. p99 ms | 1 ex. calls/s, "
        f"{results['clients']} clients | 64 ex. p50 ms | 64 ex. examples/s, 1 client | "
        f"64 ex. examples/s, {results['clients']} clients |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in PROTOCOLS:
        r = results["protocols"][p]
        lines.append(
            f"| {LABELS[p]} | {r['latency_p50_ms']:.3f} | {r['latency_p99_ms']:.3f} | "
            f"{r['loop_calls_per_s']:,.0f} | {r['batch64_p50_ms']:.2f} | "
            f"{r['batch64_examples_per_s_1client']:,.0f} | "
            f"{r['batch64_examples_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 s a loop cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=400, help="sequential calls a round")
    parser.add_argument("--seconds", type=float, default=4.0, help="closed-loop seconds a cell")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop client threads")
    parser.add_argument("--examples", type=int, default=2000, help="training examples (0/1)")
    parser.add_argument("--backbone", default="mlp:784-1000-1000")
    parser.add_argument("--out", type=Path, default=RESULTS / "inference_protocol.json")
    a = parser.parse_args()
    if a.quick:
        a.rounds, a.calls, a.seconds = 2, 200, 2.0

    from client.launch import Server

    began = time.time()
    with tempfile.TemporaryDirectory(prefix="sparsecl-oip-") as tmp:
        server = Server(
            data_dir=Path(tmp) / "data",
            backbone=a.backbone,
            args=["--http-port", "0", "--metrics-port", "0"],
        )
        with server:
            http_url = next(
                (m.group(1) for line in server.output if (m := HTTP_LINE.search(line))), None
            )
            if http_url is None:
                raise SystemExit("no `sparsecl http on URL` line:\n" + "".join(server.output))
            http_address = http_url.split("://", 1)[-1].rstrip("/")
            print(f"server {server.address}, http {http_url}", flush=True)
            learned = time.time()
            one, batch = learn(server.address, a.examples)
            print(f"learned {MODEL} in {time.time() - learned:.1f} s", flush=True)
            check = {
                "one": check_identical(server.address, http_address, one),
                "batch64": check_identical(server.address, http_address, batch),
            }
            print("answers bit-identical over Predict, ModelInfer, HTTP infer", flush=True)

            def maker(protocol: str, x: np.ndarray) -> Callable[[], Call]:
                return lambda: caller(protocol, server.address, http_address, x)

            raw: dict[str, dict[str, list[Any]]] = {
                p: {"latency": [], "loop": [], "batch": [], "batch_loop": [], "errors": []}
                for p in PROTOCOLS
            }
            for r in range(a.rounds):
                order = PROTOCOLS[r % 3 :] + PROTOCOLS[: r % 3]
                for p in order:
                    cells = raw[p]
                    cells["latency"] += sequential(maker(p, one), a.calls)
                    cells["batch"] += sequential(maker(p, batch), max(20, a.calls // 4))
                    calls, errors = closed_loop(maker(p, one), a.clients, a.seconds)
                    cells["loop"].append(calls / a.seconds)
                    calls64, errors64 = closed_loop(maker(p, batch), a.clients, a.seconds)
                    cells["batch_loop"].append(64 * calls64 / a.seconds)
                    cells["errors"].append(errors + errors64)
                    print(
                        f"round {r + 1}/{a.rounds} {p:7s}: 1 ex. p50 "
                        f"{percentile_ms(cells['latency'][-a.calls :], 50):.3f} ms, "
                        f"{calls / a.seconds:,.0f} calls/s; 64 ex. "
                        f"{64 * calls64 / a.seconds:,.0f} examples/s; errors "
                        f"{errors + errors64}",
                        flush=True,
                    )
        status = server.process.returncode if server.process else None

    protocols = {}
    for p in PROTOCOLS:
        cells = raw[p]
        protocols[p] = {
            "label": LABELS[p],
            "latency_calls": len(cells["latency"]),
            "latency_p50_ms": percentile_ms(cells["latency"], 50),
            "latency_p99_ms": percentile_ms(cells["latency"], 99),
            "loop_calls_per_s": round(float(np.median(cells["loop"])), 1),
            "loop_calls_per_s_rounds": [round(v, 1) for v in cells["loop"]],
            "batch64_p50_ms": percentile_ms(cells["batch"], 50),
            "batch64_p99_ms": percentile_ms(cells["batch"], 99),
            "batch64_examples_per_s_1client": round(64 / float(np.median(cells["batch"])), 1),
            "batch64_examples_per_s": round(float(np.median(cells["batch_loop"])), 1),
            "batch64_examples_per_s_rounds": [round(v, 1) for v in cells["batch_loop"]],
            "errors": int(sum(cells["errors"])),
        }
    results: dict[str, Any] = {
        "benchmark": "inference_protocol",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/inference_protocol.py" + (" --quick" if a.quick else ""),
        "machine": {
            "cpu": machine(),
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
        },
        "backbone": a.backbone,
        "task": {"name": MODEL, "digits": [0, 1], "examples": a.examples, **FAST},
        "rounds": a.rounds,
        "calls_per_round": a.calls,
        "seconds_per_loop_cell": a.seconds,
        "clients": a.clients,
        "check": check,
        "protocols": protocols,
        "server_exit": status,
        "wall_s": round(time.time() - began, 1),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    a.out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"wrote {a.out} and {a.out.with_suffix('.txt')} ({results['wall_s']} s)")


if __name__ == "__main__":
    main()
