"""The server's size limits per call: examples per upload and per batch, bytes per upload."""

from __future__ import annotations

from sparse_engine.config import PERIOD_STEPS, TaskConfig

from .config import ServerConfig
from .errors import LimitExceededError


def check_batch(rows: int, config: ServerConfig) -> None:
    """A Predict or Evaluate batch may hold at most ``max_batch`` examples."""
    if rows > config.max_batch:
        raise LimitExceededError(
            f"{rows} examples in one call exceed the server's limit of {config.max_batch}; "
            "send them in smaller batches (the Python client splits them for you)"
        )


def check_examples(rows: int, config: ServerConfig) -> None:
    """Training examples sent with one Analyze call: at most ``max_examples``."""
    if rows > config.max_examples:
        raise LimitExceededError(
            f"{rows} training examples exceed the server's limit of {config.max_examples}; "
            "send fewer"
        )


def check_task_config(config: TaskConfig, server: ServerConfig) -> None:
    """A task's epochs and batch size within the server's --max-epochs and --max-batch."""
    if config.total_epochs > server.max_epochs:
        raise LimitExceededError(
            f"the task would train up to {config.total_epochs} epochs (epochs + retrain_epochs "
            "× prune_rounds; an auto phase counts as its max_epochs periods, epochs unless one "
            f"makes under {PERIOD_STEPS} steps), over the server's --max-epochs of "
            f"{server.max_epochs}; train fewer"
        )
    if config.batch_size > server.max_batch:
        raise LimitExceededError(
            f"batch_size {config.batch_size} exceeds the server's --max-batch of "
            f"{server.max_batch}; use a smaller batch"
        )


def check_classes(classes: int, server: ServerConfig) -> None:
    """A task may have at most ``max_classes`` labels (its head grows with them)."""
    if classes > server.max_classes:
        raise LimitExceededError(
            f"the task has {classes} or more distinct labels, over the server's --max-classes "
            f"of {server.max_classes}; split it into smaller tasks"
        )


def check_upload(nbytes: int, examples: int, server: ServerConfig) -> None:
    """An AddTask upload so far: its bytes as sent, its examples of both splits together."""
    if nbytes > server.max_upload_bytes:
        raise LimitExceededError(
            f"the upload exceeds the server's --max-upload-bytes of "
            f"{server.max_upload_bytes}; send fewer examples (or uint8 inputs)"
        )
    if examples > server.max_examples:
        raise LimitExceededError(
            f"the upload holds more than the server's --max-examples of "
            f"{server.max_examples} (training and validation together); send fewer"
        )
