"""``--tune``: a bounded search over a few (density, k) pairs on the validation split.

Each trial learns the task with one pair over the backbone's current values, exactly as the
task itself would be learned, and scores it on the validation split (given, or the
``HOLD_OUT`` split the learner makes); nothing is committed and the backbone and owner map
are never written (a trial trains on copies, as every learn does). The choice is the
smallest density whose validation accuracy lies within ``tolerance`` of the best trial's
(ties: the higher accuracy, then the earlier pair); the chosen trial's task is the one
committed (learning it again with the same seed, data and backbone would give the same
task), so the search costs the trials' time and nothing more. The report holds every trial
and that cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import AUTO, KValue, TaskConfig, Trial, TuneReport
from .errors import InvalidInputError

# the default pairs: three densities at k auto (kwta.auto_k; benchmarks/RESULTS.md, "Sizes
# that adapt"); the trials take every other setting from the task's own TaskConfig
DENSITIES: tuple[float, ...] = (0.05, 0.1, 0.2)
CANDIDATES: tuple[tuple[float, KValue], ...] = tuple((d, AUTO) for d in DENSITIES)
TOLERANCE = 0.005  # validation accuracy (a fraction) a smaller density may lose
MAX_TRIALS = 9  # the most pairs one search may try


@dataclass(frozen=True)
class Search:
    """What a tune request asks for: the (density, k) pairs to try and the tolerance."""

    candidates: tuple[tuple[float, KValue], ...] = CANDIDATES
    tolerance: float = TOLERANCE


def check_candidates(
    candidates: Sequence[tuple[float, KValue]], tolerance: float
) -> tuple[tuple[float, KValue], ...]:
    """The pairs as a tuple, or InvalidInputError: 1 to MAX_TRIALS pairs, tolerance in [0, 1]."""
    pairs = tuple((float(d), k) for d, k in candidates)
    if not 1 <= len(pairs) <= MAX_TRIALS:
        raise InvalidInputError(
            f"tune takes 1 to {MAX_TRIALS} (density, k) pairs, got {len(pairs)}"
        )
    check_tolerance(tolerance)
    return pairs


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` when it lies in [0, 1], else InvalidInputError (NaN too)."""
    if not 0.0 <= tolerance <= 1.0:
        raise InvalidInputError(f"tune's tolerance must lie in [0, 1], got {tolerance}")
    return tolerance


def trial_configs(
    config: TaskConfig, candidates: Sequence[tuple[float, KValue]]
) -> list[TaskConfig]:
    """The task's config with each pair's density and k (InvalidInputError for a bad pair)."""
    return [dataclasses.replace(config, density=d, k=k) for d, k in candidates]


def choose(trials: Sequence[Trial], tolerance: float) -> int:
    """The index of the smallest density within ``tolerance`` of the best validation
    accuracy (ties: the higher accuracy, then the earlier trial), among the trials without
    an error; -1 when every trial has one."""
    sound = [i for i, t in enumerate(trials) if not t.error]
    if not sound:
        return -1
    best = max(trials[i].val_accuracy for i in sound)
    near = [i for i in sound if trials[i].val_accuracy >= best - tolerance]
    return min(near, key=lambda i: (trials[i].density, -trials[i].val_accuracy, i))


def report_tags(report: TuneReport) -> dict[str, Any]:
    """The report as flat ``sparsecl.tune.*`` tags (MLflow): the choice, the tolerance, cost."""
    choice = report.choice
    return {
        "sparsecl.tune.density": choice.density,
        "sparsecl.tune.k": choice.k,
        "sparsecl.tune.k_units": ",".join(map(str, choice.k_units)),
        "sparsecl.tune.val_accuracy": choice.val_accuracy,
        "sparsecl.tune.tolerance": report.tolerance,
        "sparsecl.tune.trials": len(report.trials),
        "sparsecl.tune.seconds": round(report.seconds, 3),
    }


__all__ = [
    "CANDIDATES",
    "DENSITIES",
    "MAX_TRIALS",
    "TOLERANCE",
    "KValue",
    "Trial",
    "TuneReport",
    "check_candidates",
    "check_tolerance",
    "choose",
    "report_tags",
    "trial_configs",
]
