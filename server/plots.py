"""PNG plots stored with each task's MLflow run (training curve, density per layer) and with
each analysis run (accuracy per shared weight, per reset layer, per noise level)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def owner_color(owner: int) -> tuple[float, ...]:
    """The colour of task id ``owner`` in every owner plot (tab20, by id)."""
    return tuple(plt.get_cmap("tab20")((owner - 1) % 20))


def _owner_label(owner: int, names: Mapping[int, str], own: str) -> str:
    """How a plot names an owner id: 0 = ``own``, else 'id name' (or 'id (deleted)')."""
    if owner == 0:
        return own
    return f"{owner} {names[owner]}" if owner in names else f"{owner} (deleted)"


def mask_owners(record: TaskRecord, names: Mapping[int, str], path: Path) -> None:
    """Per layer, the task's mask by owner: the free weights it claimed and each earlier
    task's weights it reads, as fractions of the mask (stacked bars)."""
    if record.reuse is None:
        raise ValueError(f"task {record.name!r} has no reuse report")
    by_owner = record.reuse.by_owner()
    layers = range(len(record.reuse.owners))
    sizes = [sum(c for _, c in layer) or 1 for layer in record.reuse.owners]
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.6 * len(layers)))
    left = [0.0] * len(layers)
    for owner, counts in by_owner.items():
        widths = [c / s for c, s in zip(counts, sizes, strict=True)]
        color = "lightgray" if owner == 0 else owner_color(owner)
        label = _owner_label(owner, names, f"own (claimed, task {record.id})")
        ax.barh(list(layers), widths, left=left, color=color, label=label)
        left = [a + w for a, w in zip(left, widths, strict=True)]
    choice = ",".join(record.reuse.choice)
    ax.set_yticks(list(layers), [f"layer {i}" for i in layers])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="fraction of the task's mask in the layer")
    ax.set_title(f"{record.name} (reuse {choice}): whose weights its mask holds")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def owner_map(
    counts: Sequence[Mapping[int, int]], sizes: Sequence[int], names: Mapping[int, str], path: Path
) -> None:
    """The backbone's owner map over time: per layer (one panel each), after each commit
    (x: task id), the fraction of the layer each task owns, stacked in id order, from
    ``counts`` (per layer, owner id → weights, as now: owned weights never change hands;
    weights freed by deletes are not shown)."""
    ids = sorted({i for layer in counts for i in layer if i})
    fig, axes = plt.subplots(1, len(counts), figsize=(5 * len(counts) + 2, 4), squeeze=False)
    for layer, (ax, owned, size) in enumerate(zip(axes[0], counts, sizes, strict=True)):
        bottom = [0.0] * len(ids)
        for owner in ids:
            heights = [owned.get(owner, 0) / size if owner <= after else 0.0 for after in ids]
            label = _owner_label(owner, names, "free") if layer == 0 else None
            ax.bar(ids, heights, bottom=bottom, color=owner_color(owner), label=label)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set(xlabel="after the commit of task id", ylim=(0, 1), title=f"layer {layer}")
        ax.set_xticks(ids)
    axes[0][0].set_ylabel("fraction of the layer's weights owned")
    fig.suptitle("owner map over time: which task owns how much of each layer")
    fig.tight_layout(rect=(0, 0, 1 - 2 / (5 * len(counts) + 2), 1))
    fig.legend(fontsize="small", loc="center right")
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
