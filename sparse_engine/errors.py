"""Errors the engine raises for bad input or impossible requests; each says what to do."""


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
