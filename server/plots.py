"""PNG plots stored with each task's MLflow run (training curve, density per layer) and with
each analysis run (accuracy per shared weight, per reset layer, per noise level)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from sparse_engine.analysis import (
    AnalysisResult,
    LayerRobustnessResult,
    NoiseRobustnessResult,
    WeightAgnosticResult,
)
from sparse_engine.config import ProgressEvent
from sparse_engine.task import TaskRecord

COLORS = {"train": "tab:blue", "retrain": "tab:orange", "prune": "tab:red", "commit": "tab:green"}


def training_curve(events: Sequence[ProgressEvent], title: str, path: Path) -> None:
    """Loss and validation accuracy per epoch, one colour per phase, prune steps marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [e for e in events if e.step == 0 and e.phase in ("train", "retrain")]
    for phase in ("train", "retrain"):
        points = [e for e in epochs if e.phase == phase]
        if points:
            xs = [e.epoch for e in points]
            ax_loss.plot(xs, [e.loss for e in points], "o-", color=COLORS[phase], label=phase)
            ax_acc.plot(xs, [e.accuracy for e in points], "o-", color=COLORS[phase], label=phase)
    for e in events:
        if e.phase == "prune":
            ax_acc.axvline(e.epoch + 0.5, color=COLORS["prune"], ls="--", lw=1)
            ax_acc.plot([e.epoch + 0.5], [e.accuracy], "x", color=COLORS["prune"])
    ax_loss.set(xlabel="epoch", ylabel="training loss", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title=f"{title}: accuracy (x = prune)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def density_per_layer(record: TaskRecord, path: Path) -> None:
    """Per backbone layer: the task's mask density and the free capacity left after it."""
    layers = range(len(record.density))
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.4
    ax.bar([i - width / 2 for i in layers], record.density, width, label="mask density")
    ax.bar(
        [i + width / 2 for i in layers],
        record.free_capacity,
        width,
        label="free capacity after commit",
    )
    ax.set_xticks(list(layers), [f"layer {i}" for i in layers])
    ax.set(ylim=(0, 1), ylabel="fraction of the layer's weights", title=f"{record.name}: density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def analysis_plot(result: AnalysisResult, path: Path) -> None:
    """The figure of one analysis result, as a PNG at ``path`` (a pyplot-free Figure, so
    analyses may plot in their own threads while the trainer plots too)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    if isinstance(result, WeightAgnosticResult):
        sign = "sign(trained) × w" if result.keep_sign else "w"
        ax.plot(result.weights, result.accuracies, "o-", label=f"every kept weight = {sign}")
        ax.axhline(result.trained_accuracy, color="tab:green", ls="--", label="trained weights")
        ax.axhline(
            result.random_accuracy,
            color="tab:red",
            ls=":",
            label=f"random weights (mean of {result.draws})",
        )
        ax.set_xscale("symlog", linthresh=min((abs(w) for w in result.weights if w), default=1))
        ax.set(xlabel="shared weight w", title=f"{result.task}: weight-agnostic evaluation")
    elif isinstance(result, LayerRobustnessResult):
        xs = range(len(result.layers))
        width = 0.4
        ax.bar([x - width / 2 for x in xs], result.reinit_accuracy, width, label="re-initialised")
        ax.bar([x + width / 2 for x in xs], result.rerandom_accuracy, width, label="re-randomised")
        ax.axhline(result.baseline_accuracy, color="tab:green", ls="--", label="as trained")
        ax.set_xticks(list(xs), list(result.layers))
        ax.set(title=f"{result.task}: one layer reset at a time")
    elif isinstance(result, NoiseRobustnessResult):
        ax.plot(result.levels, result.sparse_accuracy, "o-", label="sparse + k-WTA (the task)")
        ax.plot(result.levels, result.dense_accuracy, "s--", label="dense, same shape and data")
        ax.set(
            xlabel="noise std (× the inputs' std)",
            title=f"{result.task}: additive Gaussian input noise",
        )
    ax.set(ylabel="accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
