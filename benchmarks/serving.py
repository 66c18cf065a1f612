"""Serving: Predict throughput and latency of 1 and 2 sparsecl inference replicas, side by
side with MLServer serving the same task's dense PyTorch network.

Loopback only; everything runs on this machine and stops by itself. The benchmark starts a
real ``mlflow server`` (sqlite, artifacts in a temporary folder) as the shared store, a
``sparsecl serve --role trainer`` that learns one small MNIST task on it, then, for 1 and
2 replicas: N ``sparsecl serve --role inference`` processes (each its own data dir, all
reading the one store) and N MLServer processes (``mlserver start``, a custom runtime that
loads the task's dense network, exported from the store through ``SparseCL``/``TaskNet``,
and runs a plain torch forward; ``parallel_workers`` 0, debug logging and metrics off: its
fastest setting here), called over MLServer's gRPC KServe v2 API
(``inference.GRPCInferenceService/ModelInfer``). MLServer pins protobuf < 7, so it lives in
its own virtual environment, made on first use outside the repository (``--mlserver-venv``).

The load generator is a process of its own (this file, ``loadgen``, run by the serving
stack's Python: the project's venv for sparsecl, MLServer's for MLServer): ``--clients``
closed-loop client threads, each on its own channel, spread round-robin over the
replicas; each sends prebuilt requests of ``--batch`` float32 examples (the same bytes
for both servers), warms up, then is timed for ``--seconds``. Before the load, the
answers are checked to agree: MLServer's argmax equals sparsecl's labels on a probe batch.

A second load generator, ``h2load`` (nghttp2's HTTP/2 benchmark tool, written in C; Debian's
``nghttp2-client``), sends the same gRPC calls as raw HTTP/2 requests: one prebuilt framed
message per cell, ``--clients`` connections with one call in flight each, one h2load
process per replica. It costs a fraction of the Python generator's CPU per call, which on a
2-core machine is CPU the servers get back; both generators' rows are kept side by side
(``--loadgen``). h2load does not read gRPC trailers, so a cell counts as answered only if
every request got a 2xx and the reply bytes cover a full answer per call.

    python benchmarks/serving.py                  # 10 s a cell, writes benchmarks/results/
    python benchmarks/serving.py --quick          # 3 s a cell, 1 s warm-up
    python benchmarks/serving.py --no-mlserver    # sparsecl only
    python benchmarks/serving.py --loadgen h2load # only the h2load generator
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.tracking import free_port, start_mlflow, stop_group, stop_mlflow  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparsecl-bench"
# torch: the build on this machine's disk; uvloop: 0.22 raises in get_event_loop() where
# MLServer's inference-pool workers call it, so every worker dies at its start
MLSERVER_PINS = ["mlserver==1.7.*", "torch==2.14.1", "uvloop<0.22"]
MODEL = "digits-01"  # the task, and MLServer's model name
FAST = dict(density=0.1, k=0.25, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3)
MESSAGE_BYTES = 64 * 1024 * 1024

# The MLServer runtime: the task's dense masked network (TaskNet: masked dense weights,
# k-WTA with the task's frozen boost, linear head) as plain torch ops on its own tensors.
RUNTIME = """\
import numpy as np
import torch
import torch.nn.functional as F
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class DenseTaskNet(MLModel):
    async def load(self) -> bool:
        threads = int((self.settings.parameters.extra or {}).get("threads", 0))
        if threads:
            torch.set_num_threads(threads)
        z = np.load(self.settings.parameters.uri)
        self.layers = []
        for i in range(int(z["layers"])):
            w, b = torch.from_numpy(z[f"weight{i}"]), torch.from_numpy(z[f"bias{i}"])
            boost = torch.from_numpy(z[f"boost{i}"]).reshape(1, -1)
            self.layers.append((w, b, boost, int(z[f"k{i}"])))
        self.head = torch.from_numpy(z["head_weight"]), torch.from_numpy(z["head_bias"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = torch.from_numpy(NumpyCodec.decode_input(payload.inputs[0]))
        with torch.inference_mode():
            h = x.reshape(x.shape[0], -1)
            for w, b, boost, k in self.layers:
                pre = F.linear(h, w, b)
                winners = (pre * boost).topk(k, dim=1, sorted=False).indices
                h = torch.zeros_like(pre).scatter(1, winners, pre.gather(1, winners))
            scores = F.linear(h, *self.head)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("scores", scores.numpy())]
        )
"""


# ---- the load generator (its own process; imports only what its stack has) ----------------
def percentile_ms(values: list[float], q: float) -> float:
    return round(1e3 * float(np.percentile(values, q)), 3) if values else float("nan")


def sparsecl_caller(batches: list[np.ndarray]) -> tuple[Callable[[Any], Any], list[Any]]:
    """How a client thread calls sparsecl's Predict, and its prebuilt requests."""
    sys.path.insert(0, str(ROOT))
    from sparsecl import tensors
    from sparsecl.v1 import sparsecl_pb2 as pb
    from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

    requests = [pb.PredictRequest(task=MODEL, x=tensors.encode(x)) for x in batches]
    return (lambda channel: pb_grpc.ContinualLearnerStub(channel).Predict), requests


def mlserver_caller(batches: list[np.ndarray]) -> tuple[Callable[[Any], Any], list[Any]]:
    """How a client thread calls MLServer's ModelInfer (KServe v2, raw tensor bytes)."""
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

    requests = [
        pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="x", datatype="FP32", shape=list(x.shape)
                )
            ],
            raw_input_contents=[x.tobytes()],
        )
        for x in batches
    ]
    return (lambda channel: pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer), requests


def loadgen(args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop clients: warm up, then time every call that starts and ends in the window."""
    import grpc

    rows = np.load(args.inputs)
    batches = [
        np.ascontiguousarray(np.take(rows, range(i * args.batch, (i + 1) * args.batch), axis=0))
        for i in range(8)
    ]
    make, requests = (sparsecl_caller if args.kind == "sparsecl" else mlserver_caller)(batches)
    targets = args.targets.split(",")
    latencies: list[list[float]] = [[] for _ in range(args.clients)]
    errors: list[str] = []
    ready = threading.Barrier(args.clients + 1)
    window: list[float] = []  # [start, end], set once every client is connected

    def client(i: int) -> None:
        options = [
            ("grpc.max_receive_message_length", MESSAGE_BYTES),
            ("grpc.max_send_message_length", MESSAGE_BYTES),
        ]
        with grpc.insecure_channel(targets[i % len(targets)], options=options) as channel:
            call = make(channel)
            call(requests[0], timeout=60)  # connected before the clock starts
            ready.wait()
            start, end = window
            mine, n = latencies[i], i
            while True:
                before = time.perf_counter()
                if before >= end:
                    return
                try:
                    call(requests[n % len(requests)], timeout=30)
                except grpc.RpcError as e:
                    errors.append(f"{e.code().name}: {e.details()}")
                    continue
                finally:
                    n += 1
                after = time.perf_counter()
                if before >= start and after <= end:
                    mine.append(after - before)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window += [now + args.warmup, now + args.warmup + args.seconds]
    ready.wait()
    for t in threads:
        t.join()
    flat = [v for per in latencies for v in per]
    return {
        "calls": len(flat),
        "errors": len(errors),
        "error_examples": errors[:3],
        "calls_per_s": round(len(flat) / args.seconds, 1),
        "examples_per_s": round(len(flat) * args.batch / args.seconds, 1),
        "p50_ms": percentile_ms(flat, 50),
        "p99_ms": percentile_ms(flat, 99),
        "mean_ms": round(1e3 * float(np.mean(flat)), 3) if flat else float("nan"),
    }


# ---- the h2load generator (nghttp2's C client, gRPC calls as raw HTTP/2 requests) ----------
LOADGENS = ("python", "h2load")
H2LOAD_COUNTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
H2LOAD_2XX = re.compile(r"status codes: (\d+) 2xx")
H2LOAD_DATA = re.compile(r"traffic: .*\((\d+)\) data")


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message, uncompressed (the body of a unary call)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_call(kind: str, x: np.ndarray) -> tuple[str, bytes]:
    """The HTTP/2 path and framed body of one call: sparsecl's Predict or KServe v2
    ModelInfer, the same fields and bytes as the Python generator's prebuilt requests."""
    from sparsecl import tensors
    from sparsecl.kserve import open_inference_pb2 as kv
    from sparsecl.v1 import sparsecl_pb2 as pb

    if kind == "sparsecl":
        body = pb.PredictRequest(task=MODEL, x=tensors.encode(x)).SerializeToString()
        return "/sparsecl.v1.ContinualLearner/Predict", grpc_frame(body)
    tensor = kv.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=x.shape)
    request = kv.ModelInferRequest(
        model_name=MODEL, inputs=[tensor], raw_input_contents=[x.tobytes()]
    )
    return "/inference.GRPCInferenceService/ModelInfer", grpc_frame(request.SerializeToString())


def h2load_report(stdout: str) -> dict[str, int]:
    """The request counts, 2xx replies and DATA bytes of one h2load run's summary."""
    counts, ok, data = (p.search(stdout) for p in (H2LOAD_COUNTS, H2LOAD_2XX, H2LOAD_DATA))
    if counts is None or ok is None or data is None:
        raise RuntimeError(f"h2load printed no summary:\n{stdout[-2000:]}")
    done, failed, errored, timeout = (int(counts.group(i)) for i in (3, 5, 6, 7))
    return {
        "done": done,
        "failed": failed + errored + timeout,
        "ok": int(ok.group(1)),
        "data": int(data.group(1)),
    }


def h2load_cell(
    targets: list[str], call: tuple[str, bytes], batch: int, floor: int, a: argparse.Namespace
) -> dict[str, Any]:
    """One cell under h2load: ``a.clients`` connections spread round-robin over the replicas
    (one h2load process per replica, started together), each with one ``call`` (path, framed
    body) in flight.

    ``floor`` is the fewest DATA bytes a full answer has (its scores); a gRPC error comes
    back as a 2xx with trailers and no message, so data below done x floor means some call
    failed, and then every call of the cell is counted as an error."""
    path, body = call
    with tempfile.TemporaryDirectory(prefix="sparsecl-h2load-") as folder:
        work = Path(folder)
        (work / "body").write_bytes(body)
        procs = []
        for i, target in enumerate(targets):
            clients = len(range(i, a.clients, len(targets)))
            if clients == 0:
                continue
            cmd = ["h2load", "--clients", str(clients), "--max-concurrent-streams", "1"]
            cmd += ["--threads", "1", "--duration", f"{round(a.seconds * 1000)}ms"]
            cmd += ["--warm-up-time", f"{round(a.warmup * 1000)}ms", "--data", str(work / "body")]
            cmd += ["--header", "content-type: application/grpc", "--header", "te: trailers"]
            cmd += ["--log-file", str(work / f"log-{i}"), f"http://{target}{path}"]
            procs.append(
                (i, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            )
        reports, latencies = [], []
        for i, proc in procs:
            out, _ = proc.communicate(timeout=a.seconds + a.warmup + 120)
            reports.append(h2load_report(out.decode()))
            log = work / f"log-{i}"
            if log.stat().st_size:
                # columns: start (us since the epoch), HTTP status, us until the reply ended
                latencies.append(np.loadtxt(log, usecols=2, ndmin=1) / 1e6)
    flat = np.concatenate(latencies) if latencies else np.zeros(0)
    done = sum(r["done"] for r in reports)
    short = sum(r["data"] for r in reports) < done * floor
    errors = sum(r["failed"] + r["done"] - r["ok"] for r in reports) + (done if short else 0)
    values = flat.tolist()
    return {
        "calls": len(values),
        "errors": errors,
        "error_examples": ["replies shorter than a full answer"] if short else [],
        "calls_per_s": round(len(values) / a.seconds, 1),
        "examples_per_s": round(len(values) * batch / a.seconds, 1),
        "p50_ms": percentile_ms(values, 50),
        "p99_ms": percentile_ms(values, 99),
        "mean_ms": round(1e3 * float(np.mean(flat)), 3) if values else float("nan"),
    }


# ---- processes ----------------------------------------------------------------------------
def wait_http(url: str, process: subprocess.Popen[bytes], what: str, log: Path | None) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
                raise RuntimeError(f"{what} did not start\n{tail}") from None
            time.sleep(0.3)


@contextlib.contextmanager
def process_group(cmd: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, output to ``log``; SIGTERM to the group at the end."""
    with log.open("wb") as out:
        p = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
    try:
        yield p
    finally:
        stop_group(p)


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real ``mlflow server`` on sqlite (the store several servers share); its URI."""
    port = free_port()
    process = start_mlflow(root, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow(process)


def ensure_mlserver_venv(venv: Path) -> Path:
    """MLServer's own virtual environment (made once); its Python."""
    python, pins = venv / "bin" / "python", venv / "sparsecl-pins.txt"
    made = (venv / "bin" / "mlserver").exists() and pins.exists()
    if made and pins.read_text().split() == MLSERVER_PINS:
        return python
    print(f"making MLServer's virtual environment in {venv} (once) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + MLSERVER_PINS, check=True)
    pins.write_text("\n".join(MLSERVER_PINS) + "\n")
    return python


@contextlib.contextmanager
def mlserver(venv: Path, model_dir: Path, log: Path, workers: int) -> Iterator[str]:
    """``mlserver start`` on ``model_dir`` with free ports; its gRPC address."""
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    settings = {
        "http_port": http,
        "grpc_port": grpc_port,
        "metrics_port": metrics,
        "host": "127.0.0.1",
        "parallel_workers": workers,
        "debug": False,  # its default (True) logs at debug level
        "metrics_endpoint": None,  # sparsecl serves none either (no --metrics-port)
        "grpc_max_message_length": MESSAGE_BYTES,
    }
    (model_dir / "settings.json").write_text(json.dumps(settings))
    cmd = [str(venv / "bin" / "mlserver"), "start", str(model_dir)]
    with process_group(cmd, log, cwd=model_dir) as p:
        ready = f"http://127.0.0.1:{http}/v2/models/{MODEL}/ready"
        wait_http(ready, p, "mlserver", log)
        yield f"127.0.0.1:{grpc_port}"


# ---- the model on both sides --------------------------------------------------------------
def learn(address: str, examples: int) -> None:
    from client import Client
    from sparse_engine.mnist import load_mnist

    mnist = load_mnist()
    keep = np.isin(mnist.y_train, [0, 1])
    with Client(address, timeout=900) as client:
        client.learn(
            MODEL, (mnist.x_train[keep][:examples], mnist.y_train[keep][:examples]), **FAST
        )


def export_dense(tracking_uri: str, path: Path) -> tuple[int, ...]:
    """The task's dense network (TaskNet, rebuilt from the store by replaying its tasks) as
    the arrays MLServer's runtime loads; returns the task's classes."""
    import torch

    from server.store import TaskStore
    from server.storecheck import rebuild
    from sparse_engine import SparseCL

    store = TaskStore(tracking_uri, None, "sparsecl")
    spec, seed = store.open(None, 0, "", create=False)
    model = SparseCL(spec, seed)
    rebuild(store, model, repair=False)
    net = model.net(MODEL)
    arrays: dict[str, Any] = {"layers": len(net.kwta)}
    for i, kwta in enumerate(net.kwta):
        if kwta.keep is not None or net.spec.layers[i].kind != "linear":
            raise SystemExit("the dense export covers MLP tasks pruned by weights only")
        units = kwta.duty_cycle.numel()  # the boost as sparse_engine.kwta.kwinners makes it
        boost = (
            torch.exp((kwta.k_inference / units - kwta.duty_cycle) * kwta.boost_strength)
            if kwta.boost_strength > 0.0
            else torch.ones(units)
        )
        arrays[f"weight{i}"] = getattr(net, f"weight{i}").numpy()
        arrays[f"bias{i}"] = getattr(net, f"bias{i}").numpy()
        arrays[f"boost{i}"] = boost.numpy()
        arrays[f"k{i}"] = kwta.k_inference
    arrays["head_weight"] = net.head.weight.detach().numpy()
    arrays["head_bias"] = net.head.bias.detach().numpy()
    np.savez(path, **arrays)
    return tuple(model.task(MODEL).classes)


def write_runtime(folder: Path, weights: Path, threads: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runtime.py").write_text(RUNTIME)
    settings = {
        "name": MODEL,
        "implementation": "runtime.DenseTaskNet",
        "parameters": {"uri": str(weights), "extra": {"threads": threads}},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))


def probe_agreement(
    python: Path, kind: str, address: str, inputs: Path, classes: tuple[int, ...]
) -> np.ndarray:
    """The labels one server answers for the probe batch (run in that server's stack)."""
    out = subprocess.run(
        [
            str(python),
            __file__,
            "probe",
            "--kind",
            kind,
            "--targets",
            address,
            "--inputs",
            str(inputs),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    scores = np.asarray(json.loads(out), dtype=np.float32)
    return np.asarray(classes, dtype=np.int64)[scores.argmax(1)]


def probe(args: argparse.Namespace) -> list[list[float]]:
    """The scores one server answers for the whole probe batch."""
    import grpc

    x = np.load(args.inputs)[:64]
    make, requests = (sparsecl_caller if args.kind == "sparsecl" else mlserver_caller)([x])
    with grpc.insecure_channel(args.targets) as channel:
        reply = make(channel)(requests[0], timeout=60)
    if args.kind == "sparsecl":
        raw, shape = reply.scores.data, list(reply.scores.shape)
    else:
        raw, shape = reply.raw_output_contents[0], list(reply.outputs[0].shape)
    return np.frombuffer(raw, dtype="<f4").reshape(shape).tolist()


def visibility(root: Path, uri: str, a: argparse.Namespace) -> list[float]:
    """Seconds from each new task's AddTask returning on the trainer until both of 2
    replicas (polling every ``--poll-seconds``) answer Predict for it."""
    from client import Client, ClientError
    from client.launch import Server
    from sparse_engine.mnist import load_mnist

    mnist, seconds = load_mnist(), []
    probe = mnist.x_test[:8]
    with (
        Server(root / "trainer", tracking_uri=uri, args=["--role", "trainer"], cwd=ROOT) as t,
        replicas(2, root, uri, a.poll_seconds, []) as targets,
        Client(t.address, timeout=900) as trainer,
    ):
        for i in range(a.visibility):
            digits = [2 + 2 * (i % 4), 3 + 2 * (i % 4)]
            keep = np.isin(mnist.y_train, digits)
            name = f"visible-{i}"
            trainer.learn(name, (mnist.x_train[keep][:500], mnist.y_train[keep][:500]), **FAST)
            committed = time.perf_counter()
            for address in targets:
                with Client(address, timeout=60) as replica:
                    while True:
                        try:
                            replica.predict(name, probe)
                            break
                        except ClientError as e:
                            if e.code.name != "NOT_FOUND":
                                raise
                            time.sleep(0.01)
            seconds.append(round(time.perf_counter() - committed, 3))
    return seconds


# ---- the run ------------------------------------------------------------------------------
def run_load(
    python: Path,
    kind: str,
    targets: list[str],
    inputs: Path,
    batch: int,
    a: argparse.Namespace,
    loadgen: str = "python",
    classes: int = 2,
) -> dict[str, Any]:
    """One cell: ``loadgen`` drives ``targets`` with ``batch`` examples a call."""
    before = cpu_times()
    if loadgen == "h2load":
        x = np.ascontiguousarray(np.load(inputs)[:batch])
        row = h2load_cell(targets, grpc_call(kind, x), batch, 5 + 4 * batch * classes, a)
    else:
        cmd = [str(python), __file__, "loadgen", "--kind", kind, "--targets", ",".join(targets)]
        cmd += ["--inputs", str(inputs), "--batch", str(batch), "--clients", str(a.clients)]
        cmd += ["--seconds", str(a.seconds), "--warmup", str(a.warmup)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        row = json.loads(done.stdout)
    after = cpu_times()
    busy = 1 - (after[0] - before[0]) / max(1, after[1] - before[1])
    return {
        "server": kind,
        "loadgen": loadgen,
        "replicas": len(targets),
        "batch": batch,
        **row,
        "cpu_busy": round(busy, 2),
    }


def cpu_times() -> tuple[int, int]:
    """The machine's idle and total CPU time so far (/proc/stat, clock ticks)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return fields[3] + fields[4], sum(fields)


@contextlib.contextmanager
def replicas(n: int, root: Path, uri: str, poll: float, more: list[str]) -> Iterator[list[str]]:
    """``n`` sparsecl inference replicas of the store at ``uri``; their addresses."""
    from client.launch import Server

    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                Server(
                    root / f"replica-{n}-{i}",
                    tracking_uri=uri,
                    args=["--role", "inference", "--poll-seconds", str(poll), *more],
                    cwd=ROOT,
                )
            )
            for i in range(n)
        ]
        yield [s.address for s in servers]


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return f"{model}, {os.cpu_count()} CPUs"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| server | load generator | replicas | examples/call | calls/s | examples/s | p50 ms "
        "| p99 ms | errors | CPUs busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r.get('loadgen', 'python')} | {r['replicas']} | {r['batch']} | "
            f"{r['calls_per_s']:,.0f} | {r['examples_per_s']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} | {r['cpu_busy']:.0%} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """sparsecl over MLServer per (load generator, replicas, batch): calls/s and p99."""
    cell = {(r["server"], r.get("loadgen", "python"), r["replicas"], r["batch"]): r for r in rows}
    out = []
    for (server, gen, n, b), r in cell.items():
        other = cell.get(("mlserver", gen, n, b))
        if server == "sparsecl" and other is not None and other["calls_per_s"] > 0:
            out.append(
                {
                    "loadgen": gen,
                    "replicas": n,
                    "batch": b,
                    "throughput_ratio": round(r["calls_per_s"] / other["calls_per_s"], 2),
                    "p99_ms": [r["p99_ms"], other["p99_ms"]],
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["loadgen"], ["probe"]):
        sub = argparse.ArgumentParser()
        sub.add_argument("--kind", choices=["sparsecl", "mlserver"], required=True)
        sub.add_argument("--targets", required=True)
        sub.add_argument("--inputs", type=Path, required=True)
        sub.add_argument("--batch", type=int, default=1)
        sub.add_argument("--clients", type=int, default=4)
        sub.add_argument("--seconds", type=float, default=10.0)
        sub.add_argument("--warmup", type=float, default=2.0)
        a = sub.parse_args(argv[1:])
        print(json.dumps(loadgen(a) if argv[0] == "loadgen" else probe(a)))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds per cell")
    parser.add_argument("--quick", action="store_true", help="3 s a cell, 1 s warm-up")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop client threads")
    parser.add_argument("--replicas", default="1,2", help="replica counts, comma-separated")
    parser.add_argument("--batches", default="1,64", help="examples per call, comma-separated")
    parser.add_argument("--backbone", default="mlp:784-1000-1000")
    parser.add_argument("--examples", type=int, default=2000, help="training examples (0/1)")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="replicas' store poll")
    parser.add_argument(
        "--engine-threads", type=int, default=0, help="replicas' --engine-threads (0: theirs)"
    )
    parser.add_argument("--no-mlserver", action="store_true", help="sparsecl only")
    parser.add_argument("--mlserver-venv", type=Path, default=CACHE / "mlserver-venv")
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=0,
        help="MLServer's parallel_workers: 0 (default here) runs inference in the server's "
        "own process, its faster setting on 2 cores; 1 (MLServer's default) in a worker",
    )
    parser.add_argument(
        "--mlserver-threads", type=int, default=0, help="torch threads of its runtime (0: torch's)"
    )
    parser.add_argument(
        "--visibility",
        type=int,
        default=3,
        help="then learn this many more tasks on the trainer while 2 replicas serve, timing "
        "each until both replicas serve it (0: skip)",
    )
    parser.add_argument(
        "--loadgen",
        default=",".join(LOADGENS),
        help="load generators, comma-separated: python (this file's closed-loop gRPC "
        "threads) and h2load (nghttp2's C client; left out, with a note, where it is not "
        "installed)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    a = parser.parse_args(argv)
    loadgens = [g for g in a.loadgen.split(",") if g]
    if unknown := sorted(set(loadgens) - set(LOADGENS)):
        parser.error(f"--loadgen: unknown {unknown}; choose from {', '.join(LOADGENS)}")
    if "h2load" in loadgens and shutil.which("h2load") is None:
        if loadgens == ["h2load"]:
            parser.error("--loadgen h2load: h2load is not installed (Debian: nghttp2-client)")
        print("h2load is not installed (Debian: nghttp2-client): python generator only")
        loadgens.remove("h2load")
    if a.quick:
        a.seconds, a.warmup = 3.0, 1.0
    counts = [int(n) for n in a.replicas.split(",")]
    more = ["--engine-threads", str(a.engine_threads)] if a.engine_threads else []
    batches = [int(b) for b in a.batches.split(",")]
    sys.path.insert(0, str(ROOT))
    from client import Client
    from client.launch import Server
    from sparse_engine.mnist import load_mnist

    ml_python = None if a.no_mlserver else ensure_mlserver_venv(a.mlserver_venv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sparsecl-serving-") as folder:
        root = Path(folder)
        inputs = root / "inputs.npy"
        x_test = load_mnist().x_test
        np.save(inputs, (x_test[:4096].reshape(4096, -1).astype(np.float32) / 255.0))
        with mlflow_server(root) as uri:
            started = time.perf_counter()
            with Server(
                root / "trainer",
                backbone=a.backbone,
                tracking_uri=uri,
                args=["--role", "trainer"],
                cwd=ROOT,
            ) as trainer:
                learn(trainer.address, a.examples)
            print(f"learned {MODEL} in {time.perf_counter() - started:.0f} s", flush=True)
            classes = export_dense(uri, root / "dense.npz")
            write_runtime(root / "mlserver-model", root / "dense.npz", a.mlserver_threads)
            agreement: dict[str, Any] = {}
            for n in counts:
                with replicas(n, root, uri, a.poll_seconds, more) as targets:
                    with Client(targets[0]) as c:
                        labels = c.predict(MODEL, np.load(inputs)[:64]).labels
                    for b in batches:
                        for gen in loadgens:
                            rows.append(
                                run_load(
                                    Path(sys.executable),
                                    "sparsecl",
                                    targets,
                                    inputs,
                                    b,
                                    a,
                                    gen,
                                    len(classes),
                                )
                            )
                            print(json.dumps(rows[-1]), flush=True)
                if ml_python is None:
                    continue
                with contextlib.ExitStack() as stack:
                    targets = [
                        stack.enter_context(
                            mlserver(
                                a.mlserver_venv,
                                root / "mlserver-model",
                                root / f"mlserver-{n}-{i}.log",
                                a.mlserver_workers,
                            )
                        )
                        for i in range(n)
                    ]
                    theirs = probe_agreement(ml_python, "mlserver", targets[0], inputs, classes)
                    agreement = {
                        "probe_examples": len(labels),
                        "labels_equal": int((theirs == labels).sum()),
                    }
                    print(f"agreement: {agreement}", flush=True)
                    if agreement["labels_equal"] != len(labels):
                        raise SystemExit("MLServer and sparsecl disagree: not the same model")
                    for b in batches:
                        for gen in loadgens:
                            rows.append(
                                run_load(
                                    ml_python, "mlserver", targets, inputs, b, a, gen, len(classes)
                                )
                            )
                            print(json.dumps(rows[-1]), flush=True)
            visible = visibility(root, uri, a) if a.visibility else []
    result = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "backbone": a.backbone,
        "task": {"name": MODEL, "digits": [0, 1], "examples": a.examples, **FAST},
        "clients": a.clients,
        "loadgens": loadgens,
        "seconds": a.seconds,
        "warmup": a.warmup,
        "poll_seconds": a.poll_seconds,
        "engine_threads": a.engine_threads or "default",
        "mlserver_workers": None if a.no_mlserver else a.mlserver_workers,
        "mlserver_threads": a.mlserver_threads or "default",
        "agreement": agreement,
        "visibility_s": visible,
        "rows": rows,
        "ratios": ratios(rows),
    }
    text = table(rows)
    print(text)
    print(json.dumps(result["ratios"]))
    if visible:
        print(f"new task served by both replicas after (s): {visible}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    a.out.with_suffix(".txt").write_text(text + "\n")
    return 0 if all(r["errors"] == 0 and r["calls"] > 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
