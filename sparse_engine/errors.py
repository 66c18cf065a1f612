"""Errors the engine raises for bad input or impossible requests; each says what to do."""

from typing import Any

BRIEF = 120  # characters of a client's value an error message repeats


def brief(value: Any, limit: int = BRIEF) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message must not echo a 20 kB name
    back (gRPC would drop an oversized status and the client would see a transport error)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


class SparseCLError(Exception):
    """Base of every error sparse_engine raises on purpose."""


class InvalidInputError(SparseCLError, ValueError):
    """Data or hyper-parameters out of range (shape, dtype, NaN/Inf, empty, labels)."""


class TaskExistsError(SparseCLError):
    """A task with this name is already committed."""


class UnknownTaskError(SparseCLError, KeyError):
    """No committed task has this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NoFreeCapacityError(SparseCLError):
    """The backbone has no free weights left in some layer for a new task to claim."""


class UnsoundTaskError(InvalidInputError):
    """A learned task diverged (non-finite values) or is no better than chance: not committed."""
