"""The server's configuration: one frozen dataclass, filled from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 50051
DEFAULT_DATA_DIR = Path("sparsecl-data")
DEFAULT_BACKBONE = "mlp:784-1000-1000"  # an MLP for 28×28 inputs (MNIST-sized)
MIB = 1024 * 1024


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
    grace_seconds: float = 5.0  # in-flight calls get this long on SIGTERM

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must lie in 0..65535 (0 = any free port), got {self.port}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.max_message_bytes < 64 * 1024:
            raise ValueError(f"max_message_bytes must be >= 64 KiB, got {self.max_message_bytes}")

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
