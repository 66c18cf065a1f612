"""The server's configuration: one frozen dataclass, filled from the command line."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from sparse_engine.config import BACKENDS, DEVICES, PERIOD_STEPS

DEFAULT_PORT = 50051
DEFAULT_DATA_DIR = Path("sparsecl-data")
MIB = 1024 * 1024
# What a server does: "all" learns and serves (one machine); "trainer" is the same process
# named for a deployment where it is the store's one writer; "inference" only serves, a
# read-only replica of a remote store that follows the trainer's commits.
ROLES = ("all", "trainer", "inference")


# The limits `sparsecl serve` takes as options (--max-message-bytes, ...), with their help;
# each is a field of ServerConfig of the same name and must be > 0.
LIMITS: dict[str, str] = {
    "max_message_bytes": "bytes per gRPC message, each direction",
    "max_upload_bytes": "bytes of one AddTask upload (as sent: uint8 is 1 byte a value)",
    "max_buffered_bytes": "bytes of all uploads in flight and queued tasks' examples together",
    "max_examples": "training + validation examples of one AddTask upload",
    "max_classes": "labels of one task",
    "max_batch": "examples per Predict/Evaluate call, and a task's largest batch_size",
    "max_epochs": "epochs one task may train (epochs + retrain_epochs × prune_rounds; an auto "
    "phase counts as its max_epochs, periods that are epochs unless one makes under "
    f"{PERIOD_STEPS} steps)",
    "max_train_seconds": "seconds one task may train; past them it stops, not committed",
    "max_queue": "training jobs queued, training or uploading",
    "upload_timeout": "seconds an upload may wait for its header or its next chunk",
}


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens, where it stores tasks, and its limits.

    ``tracking_uri`` None means the embedded store: ``sqlite:///<data_dir>/mlflow.db``
    with artifacts in ``<data_dir>/artifacts``. ``backbone`` None means the one already
    stored, or ``DEFAULT_BACKBONE`` for a new store.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    tracking_uri: str | None = None
    backbone: str | None = None
    seed: int = 0
    experiment: str = "sparsecl"
    max_message_bytes: int = 4 * MIB  # per gRPC message, each direction
    max_upload_bytes: int = 2048 * MIB  # all examples of one AddTask upload
    max_queue: int = 8  # training jobs waiting or running
    max_examples: int = 1_000_000  # training + validation examples of one AddTask
    max_batch: int = 8192  # examples in one Predict or Evaluate call, and per training step
    max_buffered_bytes: int = 4096 * MIB  # uploads in flight + queued tasks' examples, all told
    max_classes: int = 1000  # labels of one task
    max_epochs: int = 200  # epochs one task trains (epochs + retrain_epochs × prune_rounds)
    max_train_seconds: float = 3600.0  # a task training longer is stopped and not committed
    upload_timeout: float = 60.0  # seconds an upload may wait for its header or next chunk
    lease_seconds: float = 30.0  # a remote store's writer lease: renewed every third of it
    grace_seconds: float = 5.0  # in-flight calls get this long on SIGTERM
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key turns TLS on
    tls_key: Path | None = None  # PEM private key
    tls_client_ca: Path | None = None  # PEM CA: clients must show a certificate it signed
    tokens: Path | None = None  # token file (see server/auth.py); None = no auth
    insecure: bool = False  # allow plaintext on a non-loopback address
    engine_threads: int = 0  # inference engine threads (0: PyTorch's intra-op count)
    interop_threads: int = 0  # PyTorch inter-op threads (0: PyTorch's default)
    engine_backend: str = "auto"  # one of sparse_engine.config.BACKENDS
    device: str = "auto"  # where tasks train: one of sparse_engine.config.DEVICES
    metrics_port: int | None = None  # Prometheus /metrics over HTTP on host; 0 = any free port
    http_port: int | None = None  # the Open Inference Protocol over HTTP on host; 0 = any free
    role: str = "all"  # one of ROLES
    poll_seconds: float = 2.0  # an inference replica looks for newly committed tasks this often

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must lie in 0..65535 (0 = any free port), got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must lie in 0..65535, got {self.metrics_port}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port must lie in 0..65535, got {self.http_port}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.role == "inference" and not self.tracking_uri:
            raise ValueError(
                "--role inference serves the store a trainer writes: give its --tracking-uri "
                "(an inference replica of the embedded store would have no tasks, ever)"
            )
        if not self.poll_seconds > 0:
            raise ValueError(f"poll_seconds must be > 0, got {self.poll_seconds}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.max_message_bytes < 64 * 1024:
            raise ValueError(f"max_message_bytes must be >= 64 KiB, got {self.max_message_bytes}")
        for name in LIMITS:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.lease_seconds >= 3:
            raise ValueError(f"lease_seconds must be >= 3, got {self.lease_seconds}")
        if self.max_upload_bytes > self.max_buffered_bytes:
            raise ValueError(
                f"max_upload_bytes ({self.max_upload_bytes}) must not exceed max_buffered_bytes "
                f"({self.max_buffered_bytes}): such an upload could never be held"
            )
        if self.engine_threads < 0 or self.interop_threads < 0:
            raise ValueError("engine_threads and interop_threads must be >= 0 (0 = default)")
        if self.engine_backend not in BACKENDS:
            raise ValueError(
                f"engine_backend must be one of {BACKENDS}, got {self.engine_backend!r}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if not self.tls and not self.insecure and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve plaintext on non-loopback address {self.host!r}: "
                "give --tls-cert and --tls-key, or pass --insecure to accept the risk"
            )

    @property
    def writes(self) -> bool:
        """Whether this server learns tasks and writes the store (every role but inference)."""
        return self.role != "inference"

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS."""
        return self.tls_cert is not None

    @property
    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI actually used (the embedded sqlite file by default)."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.data_dir.resolve() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path | None:
        """Local artifact folder of the embedded store; None lets the tracking server choose."""
        return None if self.tracking_uri else self.data_dir.resolve() / "artifacts"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) only reaches this machine."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
