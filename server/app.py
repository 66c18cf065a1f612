"""The server assembled: the data dir's lock, the bound port (serving health NOT_SERVING
at once; with --http-port the Open Inference Protocol over HTTP too), the store (and its
lease), the data plane with every committed task, the gRPC services on it (SERVING);
served until a signal.

What needs no store is checked first (the device, the token file, the TLS files, the
port), so a typo, a missing GPU or a port in use fails before the store is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sparse_engine.config import DEFAULT_BACKBONE
from sparse_engine.device import resolve_device
from sparse_engine.engine import EngineInfo, EngineSettings
from sparse_engine.model import SparseCL
from sparsecl.kserve import grpc_predict_v2_pb2_grpc as kserve_grpc
from sparsecl.v1 import sparsecl_pb2 as pb
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

from .auth import AuthInterceptor, Tokens
from .config import ServerConfig
from .dataplane import DataPlane
from .decoding import DecodeInterceptor
from .follow import Follower
from .inference_http import serve_http
from .inference_service import InferenceService
from .lease import StoreLease
from .lock import DataDirLock
from .metrics import Metrics
from .service import ContinualLearnerService
from .store import StoreUnavailableError, TaskStore, redact
from .storecheck import add_mlflow_models, rebuild

log = logging.getLogger("sparsecl.server")
SERVICE = pb.DESCRIPTOR.services_by_name["ContinualLearner"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


async def serve(config: ServerConfig) -> None:
    """Serve gRPC at once (health NOT_SERVING, calls UNAVAILABLE), open and load the store,
    then serve it (SERVING) until SIGTERM/SIGINT; shuts down gracefully."""
    resolve_device(config.device)  # --device cuda without a GPU: a start error, not a crash
    interceptors = interceptors_of(config)
    credentials = server_credentials(config)
    make_private_dir(config.data_dir)
    async with contextlib.AsyncExitStack() as held:
        lock = DataDirLock(config.data_dir)
        lock.acquire()
        held.callback(lock.release)
        server, address = bind(config, interceptors, credentials)  # before the store too
        lock.note(address)
        service = ContinualLearnerService()
        health_servicer = add_services(server, service)
        await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        held.push_async_callback(server.stop, 0)  # a start that fails stops serving too
        print(f"sparsecl listening on {address} (NOT_SERVING until loaded)", flush=True)
        if config.http_port is not None:  # the Open Inference Protocol over HTTP too
            http = await serve_http(config, service)
            held.push_async_callback(http.stop)
            print(f"sparsecl http on {http.url} (Open Inference Protocol)", flush=True)
        store, spec, seed = await open_store(config, address, held)
        plane = await load(config, store, spec, seed)
        await serve_until_signal(config, server, address, plane, service, health_servicer)


def interceptors_of(config: ServerConfig) -> list[grpc.aio.ServerInterceptor]:
    """Auth (with --tokens: the token file is read now) outermost, so that a refused call
    is not even decoded; then the answer to requests that are not valid protobuf."""
    auth = [AuthInterceptor(Tokens.load(config.tokens))] if config.tokens else []
    return [*auth, DecodeInterceptor()]


def bind(
    config: ServerConfig, interceptors: list[grpc.aio.ServerInterceptor], credentials: Any
) -> tuple[grpc.aio.Server, str]:
    """A gRPC server bound to the configured port, not serving yet, and its address."""
    limit = config.max_message_bytes
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # a second server on the same port must fail to bind, not take half the calls
            ("grpc.so_reuseport", 0),
        ],
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(config.address)
        else:
            port = server.add_secure_port(config.address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {config.address}: the port is in use (another server?) "
            "or the address is not one of this machine's"
        )
    return server, f"{config.host}:{port}"


async def open_store(
    config: ServerConfig, address: str, held: contextlib.AsyncExitStack
) -> tuple[TaskStore, str, int]:
    """The store, and the backbone it holds (spec, seed). A remote store a server writes is
    leased until ``held`` closes (it has no shared data dir to lock); an inference replica
    waits until the store is reachable and its trainer has created it."""
    store = TaskStore(config.resolved_tracking_uri, config.artifact_root, config.experiment)
    if not config.writes:
        spec, seed = await wait_for_store(store, config)
        return store, spec, seed
    spec, seed = await asyncio.to_thread(store.open, config.backbone, config.seed, DEFAULT_BACKBONE)
    if config.tracking_uri:
        lease = StoreLease(store, config.lease_seconds)
        lease.note(address)
        await asyncio.to_thread(lease.acquire)
        held.push_async_callback(asyncio.to_thread, lease.release)
    return store, spec, seed


async def wait_for_store(store: TaskStore, config: ServerConfig) -> tuple[str, int]:
    """Open the store without writing to it, every ``poll_seconds`` until it can be (a
    replica may start before the tracking server or its trainer); each reason logged once."""
    said = ""
    while True:
        try:
            return await asyncio.to_thread(store.open, config.backbone, 0, "", False)
        except StoreUnavailableError as e:
            if str(e) != said:
                log.warning("waiting for the store (health NOT_SERVING): %s", e)
                said = str(e)
        await asyncio.sleep(config.poll_seconds)


async def load(config: ServerConfig, store: TaskStore, spec: str, seed: int) -> DataPlane:
    """The data plane: the backbone with the store's committed tasks replayed (damaged ones
    quarantined) and their inference plans compiled, so a first Predict does not pay."""
    model = SparseCL(spec, seed, device=config.device)
    model.engine.configure(
        EngineSettings(
            threads=config.engine_threads,
            interop_threads=config.interop_threads,
            backend=config.engine_backend,  # type: ignore[arg-type]
        )
    )
    info = model.engine.info()
    if info.warning:
        log.warning("%s; Predict runs the slower torch backend", info.warning)
    if store.relocated_from:
        log.info(
            "data dir moved or copied: artifacts of %s now read from the data dir's own artifacts/",
            store.relocated_from,
        )
    # a replica repairs nothing: the trainer owns the store
    rebuilt = await asyncio.to_thread(rebuild, store, model, config.writes)
    for task in rebuilt.damaged:
        log.warning("task %r is quarantined (damaged): %s", task.name, task.error)

    def compile_plans() -> None:
        for name in model.tasks:
            model.plan(name)

    await asyncio.to_thread(compile_plans)
    if config.writes:  # tasks stored before MLflow models were written gain theirs
        try:
            added = await asyncio.to_thread(add_mlflow_models, store, model, rebuilt.committed)
            if added:
                log.info("wrote the MLflow model of %d task(s) stored before them", added)
        except StoreUnavailableError as e:  # served all the same; the next start retries
            log.warning("could not write the MLflow models of older tasks: %s", e)
    plane = DataPlane(config, model, store, rebuilt)
    if config.writes:
        await asyncio.to_thread(plane.describe_backbone)
    return plane


async def serve_until_signal(
    config: ServerConfig,
    server: grpc.aio.Server,
    address: str,
    plane: DataPlane,
    service: ContinualLearnerService,
    health_servicer: health.aio.HealthServicer,
) -> None:
    """Serve ``plane`` until SIGTERM/SIGINT, then stop: not serving, the running task
    cancelled, in-flight calls given their grace, the trainer joined. An inference replica
    follows its store meanwhile (follow.py)."""
    metrics = Metrics(plane) if config.metrics_port is not None else None
    service.attach(plane, metrics)
    plane.start()
    scraped = ""
    if metrics is not None and config.metrics_port is not None:
        port = metrics.serve(config.host, config.metrics_port)
        scraped = f" | metrics http://{config.host}:{port}/metrics"
    following = None
    if not config.writes:
        following = asyncio.create_task(Follower(plane, config.poll_seconds).run())
    await set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    print(banner(config, address, plane) + scraped, flush=True)
    await signalled()
    print("sparsecl: shutting down", flush=True)
    await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    if following is not None:
        following.cancel()
    plane.stop()
    await server.stop(config.grace_seconds)
    await asyncio.to_thread(plane.trainer.join, 60.0)


def add_services(
    server: grpc.aio.Server, service: ContinualLearnerService
) -> health.aio.HealthServicer:
    """The ContinualLearner ``service``, the Open Inference Protocol on its data plane,
    health checks and reflection (of all but the inference service, whose descriptor is
    never loaded: see protos/sparsecl/kserve); returns the health servicer (its status
    unset: set it before serving)."""
    pb_grpc.add_ContinualLearnerServicer_to_server(service, server)
    kserve_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, HEALTH, reflection.SERVICE_NAME), server)
    return health_servicer


async def set_health(servicer: health.aio.HealthServicer, status: Any) -> None:
    """The status of the server as a whole ("") and of the ContinualLearner service."""
    for name in ("", SERVICE):
        await servicer.set(name, status)


async def signalled() -> None:
    """Wait for SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def banner(config: ServerConfig, address: str, plane: DataPlane) -> str:
    """The ready line (tests and scripts read the address from it)."""
    model, store = plane.model, plane.store
    training = f"training on {model.device.type} | " if config.writes else ""
    return (
        f"sparsecl serving on {address} | role {config.role} | "
        f"backbone {model.spec} (seed {model.seed}) | {training}"
        f"{len(model.tasks)} tasks, {len(plane.failed)} failed, {len(plane.damaged)} damaged | "
        f"MLflow {redact(store.tracking_uri)} | {security(config)} | "
        f"engine {engine_text(model.engine.info())}, {model.engine.threads} threads"
    )


def engine_text(info: EngineInfo) -> str:
    """The inference backend and the native kernel's level, e.g. "native x86-64-v4"."""
    return f"{info.backend} {info.isa}".strip()


def server_credentials(config: ServerConfig) -> Any:
    """TLS credentials from the PEM files (mutual TLS with a client CA), None for plaintext."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    check_tls_files(config.tls_cert, config.tls_key, config.tls_client_ca)
    client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def check_tls_files(cert: Path, key: Path, client_ca: Path | None) -> None:
    """Raise ValueError naming the file unless the PEM certificate chain, its key and the
    client CA parse and belong together (gRPC would only say 'Failed to bind' later)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise ValueError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its "
            f"private key ({e})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as e:
            raise ValueError(f"--tls-client-ca {client_ca}: not a PEM certificate ({e})") from None


def make_private_dir(path: Path) -> None:
    """Create the data dir readable by its owner only (0700): it holds every task's data."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask


def security(config: ServerConfig) -> str:
    """One line on how the server is protected (never the tokens themselves)."""
    transport = "mutual TLS" if config.tls_client_ca else "TLS" if config.tls else "plaintext"
    return f"{transport}, {'bearer tokens' if config.tokens else 'no auth'}"
