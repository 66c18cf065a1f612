"""Task-free inference: which committed task an input belongs to, its label and a confidence.

Each task keeps a small *task-identity model* learned from its own training inputs when it
is learned, frozen with it like its head: per class, a probabilistic PCA (Tipping & Bishop
1999) of the inputs, ``COMPONENTS`` principal directions plus isotropic noise, i.e. a
Gaussian with a low-rank covariance (the Mahalanobis-style density of Lee et al. 2018,
here on the inputs). A task's score for an input is its log-likelihood under the task's
classes (uniform mixture); the task with the highest score wins, and its own subnetwork
gives the label. Nothing is learned across tasks, so a later task never changes what an
earlier one answers. Measured (``benchmarks/taskfree.py``): it picks the right task far
more often than the lowest-entropy head on Split-MNIST run class-incrementally, where
each head only ever saw two digits and is confident on every other digit too.

Confidence = p(task | x) × p(label | x, task): the task posterior is a softmax of the
scores divided by ``TEMPERATURE`` (log-likelihoods over hundreds of inputs differ by
hundreds of nats, so the raw posterior is ~1 even when wrong), the label's probability the
task's softmax.

Storage: a class's mean and principal directions are rounded to ``PRECISION`` (float16)
when fitted, in memory as on disk, so the trainer, every replica and every restart score
with the same values; the bank computes in float32 and float64 from them. Tasks stored
with float32 identity models (earlier releases) load and score exactly as before. Tasks
stored before identity models existed have none; while any such task
is served, every task is scored by the negative entropy of its head's softmax instead
(``rule == "entropy"``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# principal directions per class; Split-MNIST task inference: 10 → 95.2 %, 20 → 96.0 %,
# 40 → 95.8 % (test split, full training data, 2026-12-01)
COMPONENTS = 20
# the precision a class's mean and directions are kept in (in memory and on disk): float16
# halves the identity model (659 → 330 KB per 10-class task on 784 inputs) with the same
# task inference as float32 (Permuted MNIST 100.00 %, Split-MNIST class-incremental
# 96.03 %, ECE 1.63 vs 1.64 %; benchmarks/taskfree.py, full data, 2026-12-01)
PRECISION = torch.float16
# nats: the ECE-optimal T on Split-MNIST validation data of 784-1000-1000 (was 30, fitted on
# a smaller exploration model). Held-out test data, 784-300-300 and 784-1000-1000, two seeds,
# full and --quick training sets: Split-MNIST class-incremental ECE 1.5-2.4 → 0.3-1.1 %,
# Permuted MNIST unchanged (benchmarks/taskfree_temperature.py, 2026-12-01). One T for
# every task, so the inferred task (the argmax) never depends on it.
TEMPERATURE = 45.0
ENTROPY_TEMPERATURE = 0.05  # nats of entropy, for the fallback rule (Permuted MNIST validation)
_FLOOR = 1e-3  # variances below this fraction of the mean per-input variance are raised to it


@dataclass(frozen=True, eq=False)
class TaskIdentity:
    """Per class of one task, a probabilistic PCA of its training inputs (flattened)."""

    mean: Tensor  # PRECISION (float32 in tasks stored before it), C × D
    basis: Tensor  # PRECISION (or float32), C × D × d: orthonormal principal directions
    variances: Tensor  # float32, C × d: the variance along each direction
    noise: Tensor  # float32, C: the variance left in the other D - d directions

    @property
    def nbytes(self) -> int:
        """The bytes its tensors hold (as stored: the same tensors)."""
        return sum(getattr(self, f.name).nbytes for f in dataclasses.fields(self))

    @property
    def classes(self) -> int:
        return int(self.mean.shape[0])

    @property
    def components(self) -> int:
        return int(self.basis.shape[2])


def fit_identity(
    x: Tensor, y: Tensor, components: int = COMPONENTS, precision: torch.dtype = PRECISION
) -> TaskIdentity:
    """The task-identity model of a task's training inputs ``x`` (N × ...) and labels ``y``,
    one class per distinct label in sorted order (the task's ``classes``), its means and
    directions rounded to ``precision``."""
    flat = x.reshape(len(x), -1).to(torch.float64)
    labels = torch.unique(y)
    counts = [int((y == c).sum()) for c in labels]
    dim = flat.shape[1]
    d = max(0, min(components, min(counts) - 1, dim - 1))
    means, bases, variances, noises = [], [], [], []
    for c in labels:
        xc = flat[y == c]
        mean = xc.mean(0)
        centred = xc - mean
        cov = centred.T @ centred / max(1, len(xc) - 1)
        eig, vec = torch.linalg.eigh(cov)  # ascending
        eig, vec = eig.flip(0).clamp_min(0.0), vec.flip(1)
        floor = _FLOOR * max(float(eig.sum()) / dim, 1e-12)
        means.append(mean)
        bases.append(vec[:, :d])
        variances.append(eig[:d].clamp_min(floor))
        noises.append(eig[d:].mean().clamp_min(floor))
    return TaskIdentity(
        torch.stack(means).to(precision),
        torch.stack(bases).to(precision).contiguous(),
        torch.stack(variances).float(),
        torch.stack(noises).float(),
    )


class IdentityBank:
    """Every served task's identity model stacked, so one matrix product scores them all.
    Means and directions are widened to float32 first (exact from float16), so a float32
    identity model is scored exactly as before float16 ones existed."""

    def __init__(self, identities: Sequence[TaskIdentity]) -> None:
        identities = [widened(i) for i in identities]
        self.tasks = len(identities)
        self.dim = int(identities[0].mean.shape[1]) if identities else 0
        self.basis = torch.cat(  # D × Σ(C·d): every class's directions side by side
            [i.basis.permute(1, 0, 2).reshape(self.dim, -1) for i in identities], dim=1
        ).double()
        means = torch.cat([i.mean for i in identities]).double()  # K × D, K classes in all
        self.means_t = means.T.contiguous()
        self.mean_sq = (means**2).sum(1)
        self.projected_means = torch.cat(
            [torch.einsum("cd,cdk->ck", i.mean, i.basis).reshape(-1) for i in identities]
        ).double()
        self.inv_var = torch.cat([i.variances.reshape(-1) for i in identities]).double()
        self.inv_var = self.inv_var.reciprocal()
        self.noise = torch.cat([i.noise for i in identities]).double()
        classes = [i.classes for i in identities]
        comps = [i.components for i in identities]
        # column j of the projections belongs to class segment[j]; class k to task owner[k]
        self.segment = torch.repeat_interleave(
            torch.arange(sum(classes)),
            torch.tensor([d for c, d in zip(classes, comps, strict=True) for _ in range(c)]),
        )
        self.owner = torch.repeat_interleave(torch.arange(self.tasks), torch.tensor(classes))
        log_norm = torch.zeros(sum(classes), dtype=torch.float64)
        k = 0
        for i in identities:
            for c in range(i.classes):
                log_norm[k] = (
                    i.variances[c].double().log().sum()
                    + (self.dim - i.components) * math.log(float(i.noise[c]))
                    + self.dim * math.log(2 * math.pi)
                )
                k += 1
        self.log_norm = log_norm
        self.log_classes = torch.tensor([math.log(c) for c in classes], dtype=torch.float64)

    def scores(self, x: Tensor) -> Tensor:
        """Per example and task, log p(x | task) (float64, N × tasks). In float64, so that
        no finite float32 input overflows it (its square would in float32)."""
        flat = x.reshape(len(x), -1).double()
        z = flat @ self.basis - self.projected_means  # N × Σd: coordinates along each basis
        zeros = torch.zeros(len(flat), len(self.noise), dtype=torch.float64)
        quad = zeros.index_add(1, self.segment, z * z * self.inv_var)
        along = zeros.index_add(1, self.segment, z * z)
        dist = (flat * flat).sum(1, keepdim=True) - 2 * flat @ self.means_t + self.mean_sq
        residual = (dist - along).clamp_min(0.0)
        per_class = -0.5 * (quad + residual / self.noise + self.log_norm)  # N × K
        out = torch.full((len(flat), self.tasks), -math.inf, dtype=torch.float64)
        for t in range(self.tasks):
            out[:, t] = per_class[:, self.owner == t].logsumexp(1) - self.log_classes[t]
        return out


def widened(identity: TaskIdentity) -> TaskIdentity:
    """``identity`` with its mean and directions in float32 (as they are, when they are)."""
    return dataclasses.replace(
        identity, mean=identity.mean.float(), basis=identity.basis.float().contiguous()
    )


@dataclass(frozen=True, eq=False)
class TaskFreePrediction:
    """Per example: the inferred task, its label (in that task's own values) and confidence."""

    tasks: tuple[str, ...]  # per example, the task inferred
    labels: Tensor  # int64, N: the label, in the inferred task's own label values
    confidence: Tensor  # float32, N: p(task | x) × p(label | x, task)
    names: tuple[str, ...]  # the tasks scored, in id order: the columns of task_probs
    task_probs: Tensor  # float32, N × tasks: p(task | x)
    rule: str  # "identity" (the tasks' identity models) or "entropy" (lowest entropy)

    @property
    def task_index(self) -> Tensor:
        """Per example, the inferred task's column in ``names``."""
        return self.task_probs.argmax(1)


def entropy_scores(logits: Sequence[Tensor]) -> Tensor:
    """Per example and task, the negative entropy of the task's softmax (N × tasks)."""
    return torch.stack([(lg.softmax(1) * lg.log_softmax(1)).sum(1) for lg in logits], 1)


def expected_calibration_error(confidence: Tensor, correct: Tensor, bins: int = 15) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width bins."""
    edges = torch.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            gap = confidence[inside].mean() - correct[inside].float().mean()
            total += float(inside.float().mean()) * abs(float(gap))
    return total


__all__ = [
    "COMPONENTS",
    "ENTROPY_TEMPERATURE",
    "PRECISION",
    "TEMPERATURE",
    "IdentityBank",
    "TaskFreePrediction",
    "TaskIdentity",
    "entropy_scores",
    "expected_calibration_error",
    "fit_identity",
]
