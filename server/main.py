"""Start the server: open the store, rebuild every committed task, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparse_engine.config import DEFAULT_BACKBONE

from .config import ServerConfig
from .lock import DataDirLock, StoreLockedError

if TYPE_CHECKING:
    from .store import TaskStore

log = logging.getLogger("sparsecl.server")
SERVICE = "sparsecl.v1.ContinualLearner"


async def serve(config: ServerConfig) -> None:
    """Load the store, then serve gRPC until a signal asks to stop; shuts down gracefully."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import grpc

    from .auth import AuthInterceptor, Tokens
    from .decoding import DecodeInterceptor

    # read the token file and TLS files first: a typo fails before the store is touched
    interceptors: list[grpc.aio.ServerInterceptor] = [DecodeInterceptor()]
    if config.tokens:  # outermost: a refused call is not even decoded
        interceptors.insert(0, AuthInterceptor(Tokens.load(config.tokens)))
    credentials = server_credentials(config)
    make_private_dir(config.data_dir)
    lock = DataDirLock(config.data_dir)
    lock.acquire()
    try:
        await _serve(config, interceptors, credentials, lock)
    finally:
        lock.release()


async def _serve(
    config: ServerConfig, interceptors: list[Any], credentials: Any, lock: DataDirLock
) -> None:
    """Open the store and serve, holding the data dir's lock."""
    import grpc

    from .lease import StoreLease
    from .store import TaskStore

    # bind first: a port in use fails before the store is touched (bound, not yet serving)
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
    lock.note(f"{config.host}:{port}")
    store = TaskStore(config.resolved_tracking_uri, config.artifact_root, config.experiment)
    spec, seed = await asyncio.to_thread(store.open, config.backbone, config.seed, DEFAULT_BACKBONE)
    lease = None
    if config.tracking_uri:  # a remote store: no shared data dir to lock, a lease instead
        lease = StoreLease(store, config.lease_seconds)
        lease.note(f"{config.host}:{port}")
        await asyncio.to_thread(lease.acquire)
    try:
        await _run(config, server, port, store, spec, seed)
    finally:
        if lease is not None:
            await asyncio.to_thread(lease.release)


async def _run(
    config: ServerConfig, server: Any, port: int, store: TaskStore, spec: str, seed: int
) -> None:
    """Rebuild the tasks from the opened store, then serve until SIGTERM/SIGINT."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from sparse_engine.engine import EngineSettings
    from sparse_engine.model import SparseCL
    from sparsecl.v1 import sparsecl_pb2 as pb
    from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

    from .service import ContinualLearnerService
    from .store import redact
    from .storecheck import rebuild

    model = SparseCL(spec, seed)
    model.engine.configure(
        EngineSettings(
            threads=config.engine_threads,
            interop_threads=config.interop_threads,
            backend=config.engine_backend,  # type: ignore[arg-type]
        )
    )
    await asyncio.to_thread(model.engine.warm_up)
    if store.relocated_from:
        log.info(
            "data dir moved or copied: artifacts of %s now read from the data dir's own artifacts/",
            store.relocated_from,
        )
    stored = await asyncio.to_thread(rebuild, store, model)  # damaged tasks are quarantined
    committed, failed = stored.committed, stored.failed
    for task in stored.damaged:
        log.warning("task %r is quarantined (damaged): %s", task.name, task.error)

    def compile_plans() -> None:  # before serving: a first Predict would pay for it
        for name in model.tasks:
            model.plan(name)

    await asyncio.to_thread(compile_plans)
    await asyncio.to_thread(
        store.describe_backbone,
        spec,
        seed,
        len(model.tasks),
        model.spec.overall(model.free_capacity()),
    )

    service = ContinualLearnerService(config, model, store, committed, failed, stored.damaged)
    pb_grpc.add_ContinualLearnerServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        pb.DESCRIPTOR.services_by_name["ContinualLearner"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    await server.start()
    service.trainer.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    print(
        f"sparsecl serving on {config.host}:{port} | backbone {spec} (seed {seed}) | "
        f"{len(model.tasks)} tasks, {len(failed)} failed, {len(stored.damaged)} damaged | "
        f"MLflow {redact(store.tracking_uri)} | "
        f"{security(config)} | engine {model.engine.backend}, {model.engine.threads} threads",
        flush=True,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("sparsecl: shutting down", flush=True)
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    service.trainer.stop()
    await server.stop(config.grace_seconds)
    await asyncio.to_thread(service.trainer.join, 60.0)


def server_credentials(config: ServerConfig) -> Any:
    """TLS credentials from the PEM files (mutual TLS with a client CA), None for plaintext."""
    import grpc

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


def run(config: ServerConfig) -> int:
    """Serve ``config``; returns the process exit status (2 when the store cannot be used)."""
    # Bit-identical predictions across restarts: MKL must not change its thread count or
    # code path with the machine's load (set before torch loads MKL).
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    os.environ.setdefault("MKL_CBWR", "AUTO")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from .store import StoreCorruptError, StoreUnavailableError

    try:
        asyncio.run(serve(config))
    except (StoreUnavailableError, StoreCorruptError, StoreLockedError, OSError, ValueError) as e:
        print(f"sparsecl serve: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
