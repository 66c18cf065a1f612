"""Hostile uploads: server memory and Predict/health latency while uploads hit the caps.

Starts its own server (embedded store in a temporary folder, loopback only), learns one
small task, then sends --uploads concurrent AddTask uploads of --megabytes of uint8
images each against --max-buffered-bytes. Each header announces one example more than is
sent, so a complete upload is refused at its end and no task trains: what the server
holds is the uploads alone. Meanwhile one client calls Predict (one example) and the
health service every 20 ms. Bounded in uploads and seconds; prints JSON.

    python benchmarks/uploads.py                    # 8 × 100 MB against a 256 MiB cap
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import FAST, ROOT, examples, percentile

sys.path.insert(0, str(ROOT))
from client import Client
from client.convert import tensor
from client.launch import Server
from sparse_engine.mnist import load_mnist
from sparsecl.v1 import sparsecl_pb2 as pb
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

MIB = 1024 * 1024
CHUNK_ROWS = 8000  # 6.3 MB of 784-pixel images per message


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def upload_all(address: str, uploads: int, rows: int, codes: Any, nice: int = 0) -> None:
    """``uploads`` concurrent AddTask uploads of ``rows`` MNIST images each, each announcing
    one example more than it sends; puts each call's status code name on ``codes``."""
    os.nice(nice)
    mnist = load_mnist()
    x = np.resize(mnist.x_train.reshape(-1, 784), (rows, 784))
    y = np.resize(np.array([0, 1], dtype=np.int64), rows)
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 8 * MIB)])
    stub = pb_grpc.ContinualLearnerStub(channel)

    def upload(i: int) -> None:
        hp = pb.HyperParameters(k=[pb.KSize(fraction=0.25)], epochs=1, retrain_epochs=1)
        head = pb.AddTaskHeader(name=f"big{i}", hyper_parameters=hp, train_examples=rows + 1)

        def requests() -> Iterator[pb.AddTaskRequest]:
            yield pb.AddTaskRequest(header=head)
            for s in range(0, rows, CHUNK_ROWS):
                part = pb.ExampleChunk(
                    split=pb.SPLIT_TRAIN,
                    x=tensor(x[s : s + CHUNK_ROWS]),
                    y=tensor(y[s : s + CHUNK_ROWS]),
                )
                yield pb.AddTaskRequest(chunk=part)

        try:
            list(stub.AddTask(requests(), timeout=300))
            codes.put("OK")
        except grpc.RpcError as e:
            codes.put(e.code().name)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(uploads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--megabytes", type=int, default=100, help="per upload (uint8)")
    parser.add_argument("--cap-mib", type=int, default=256, help="--max-buffered-bytes")
    parser.add_argument("--backbone", default="mlp:784-1000-1000")
    parser.add_argument(
        "--uploader-nice",
        type=int,
        default=0,
        help="niceness of the uploading process (19 stands for clients on other machines)",
    )
    args = parser.parse_args(argv)
    mnist = load_mnist()
    rows = args.megabytes * 1_000_000 // 784
    serve_args = (
        *("--max-buffered-bytes", str(args.cap_mib * MIB)),
        *("--max-upload-bytes", str(min(args.cap_mib, 2 * args.megabytes) * MIB)),
        *("--max-message-bytes", str(8 * MIB), "--max-queue", str(args.uploads + 1)),
        *("--max-examples", str(rows + 10)),
    )
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as tmp,
        Server(Path(tmp) / "data", args.backbone, args=list(serve_args), cwd=ROOT) as server,
    ):
        assert server.process is not None
        address, pid = server.address, server.process.pid
        client = Client(address, timeout=120)
        client.learn("A", examples(mnist, [0, 1], 500), **FAST)
        baseline = rss(pid)
        channel = grpc.insecure_channel(address)
        health = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda _: b"",
            response_deserializer=lambda b: b,
        )
        # the uploads come from another process, so that serialising them does not hold
        # this process's GIL and inflate the latencies measured here
        codes = spawn.Queue()
        uploader = spawn.Process(
            target=upload_all, args=(address, args.uploads, rows, codes, args.uploader_nice)
        )
        start = time.monotonic()
        uploader.start()
        peak, predict, checks = baseline, [], []
        probe = mnist.x_test[:1]
        while uploader.is_alive() and time.monotonic() - start < 600:
            t0 = time.perf_counter()
            client.predict("A", probe)
            t1 = time.perf_counter()
            health(b"", timeout=10)
            t2 = time.perf_counter()
            predict.append((t1 - t0) * 1000)
            checks.append((t2 - t1) * 1000)
            peak = max(peak, rss(pid))
            time.sleep(0.02)
        uploader.join(60)
        seconds = time.monotonic() - start
        got = [codes.get(timeout=10) for _ in range(args.uploads)]
        channel.close()
        client.close()
    result = {
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "uploads": args.uploads,
        "megabytes_each": args.megabytes,
        "cap_mib": args.cap_mib,
        "uploader_nice": args.uploader_nice,
        "codes": {c: got.count(c) for c in sorted(set(got))},
        "seconds": round(seconds, 1),
        "rss_baseline_mib": round(baseline / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_growth_mib": round((peak - baseline) / MIB, 1),
        "float32_equivalent_mib": round(args.uploads * args.megabytes * 4e6 / MIB, 1),
        "predict_ms": {
            "calls": len(predict),
            "p50": round(percentile(predict, 50), 2),
            "p99": round(percentile(predict, 99), 2),
            "max": round(max(predict, default=float("nan")), 2),
        },
        "health_ms": {
            "p50": round(percentile(checks, 50), 2),
            "p99": round(percentile(checks, 99), 2),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
