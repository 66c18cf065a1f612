"""Continual-learning metrics from the accuracy matrix R[i][j].

R[i][j] is the accuracy on task j after learning task i. Forward transfer compares the
diagonal with a reference vector: each task's accuracy learned alone (``fwt``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def forward_transfer(
    learned: Sequence[float], reference: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Forward transfer with per-task heads (task-incremental: R[i-1][i] is undefined): per
    task, its accuracy as learned in the stream (``learned``, in learning order) minus
    ``reference``, its accuracy learned alone by the same recipe on a fresh backbone; and
    FWT, their mean over tasks 2..T (the first has no earlier task); > 0: earlier tasks helped."""
    if len(reference) != len(learned):
        raise ValueError(f"need {len(learned)} reference accuracies, got {len(reference)}")
    gain = np.asarray(learned, dtype=float) - np.asarray(reference, dtype=float)
    return gain, float(np.mean(gain[1:])) if len(gain) > 1 else 0.0


class AccuracyMatrix:
    """R[i][j] for T tasks, filled row by row as tasks are learned (NaN = not yet measured)."""

    def __init__(self, tasks: int) -> None:
        if tasks < 1:
            raise ValueError(f"need at least one task, got {tasks}")
        self.r = np.full((tasks, tasks), np.nan)

    @classmethod
    def from_rows(cls, rows: list[list[float]]) -> AccuracyMatrix:
        matrix = cls(len(rows))
        matrix.r[:] = np.asarray(rows, dtype=float)
        return matrix

    def record(self, after: int, task: int, accuracy: float) -> None:
        """Accuracy on task ``task`` measured after learning task ``after`` (0-based)."""
        self.r[after, task] = accuracy

    @property
    def tasks(self) -> int:
        return int(self.r.shape[0])

    def acc(self) -> float:
        """Average accuracy over all tasks after learning the last one (Lopez-Paz & Ranzato)."""
        return float(np.mean(self.r[-1]))

    def bwt(self) -> float:
        """Backward transfer: mean over j < T of R[T-1, j] - R[j, j]; 0 means no forgetting."""
        if self.tasks < 2:
            return 0.0
        last = self.r[-1, :-1]
        diag = np.diag(self.r)[:-1]
        return float(np.mean(last - diag))

    def fwt(self, reference: Sequence[float]) -> float:
        """Forward transfer (``forward_transfer``) of the diagonal against ``reference``."""
        return forward_transfer(np.diag(self.r).tolist(), reference)[1]

    def transfer(self, reference: Sequence[float]) -> np.ndarray:
        """Per task i, R[i][i] - ``reference[i]``."""
        return forward_transfer(np.diag(self.r).tolist(), reference)[0]

    def forgetting(self) -> float:
        """Mean over j < T of the best earlier accuracy on j minus the final one (Chaudhry)."""
        if self.tasks < 2:
            return 0.0
        best = np.max(self.r[:-1, :-1], axis=0)
        return float(np.mean(best - self.r[-1, :-1]))

    def format(self, names: list[str] | None = None) -> str:
        """The matrix as a text table (percent), rows = after learning, columns = task."""
        names = names or [f"t{i + 1}" for i in range(self.tasks)]
        width = max(7, *(len(n) for n in names)) + 1  # a space between columns, however long
        head = " " * width + "".join(f"{n:>{width}}" for n in names)
        lines = [head]
        for i, name in enumerate(names):
            cells = "".join(
                f"{'':>{width}}" if np.isnan(v) else f"{100 * v:>{width}.2f}" for v in self.r[i]
            )
            lines.append(f"{name:<{width}}{cells}")
        return "\n".join(lines)
