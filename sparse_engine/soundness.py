"""A learned task is committed only when it is sound: finite throughout and above chance.

The backbone is shared: a task committed with NaN weights would reach every later task
that reads them, so a diverged or useless learn is refused before anything is frozen.
"""

from __future__ import annotations

import math

import torch

from .errors import UnsoundTaskError
from .task import Task


def chance(classes: int) -> float:
    """The accuracy of guessing uniformly among ``classes`` labels."""
    return 1.0 / classes


def check_sound(task: Task) -> None:
    """Raise UnsoundTaskError, saying why and what to change, unless every tensor of a
    learned task is finite, its last training loss is finite and its validation accuracy
    beats chance."""
    name, classes, config = task.name, len(task.classes), task.config
    tensors = {
        **{f"layer {i} weights": w for i, w in enumerate(task.own_values)},
        **{f"layer {i} biases": b for i, b in enumerate(task.biases)},
        **{f"layer {i} k-WTA duty cycles": s.duty_cycle for i, s in enumerate(task.kwta)},
        "head weights": task.head_weight,
        "head biases": task.head_bias,
    }
    bad = [what for what, t in tensors.items() if not bool(torch.isfinite(t).all())]
    bad += [
        f"layer {i} k-WTA boost"
        for i, s in enumerate(task.kwta)
        if not math.isfinite(s.boost_strength)
    ]
    losses = [
        float(h["loss"]) for h in task.record.history if h.get("phase") in ("train", "retrain")
    ]
    if losses and not math.isfinite(losses[-1]):
        bad.append(f"training loss ({losses[-1]})")
    hint = (
        f"lower lr (now {config.lr:g})"
        + (f" or use optimizer adam (now {config.optimizer})" if config.optimizer != "adam" else "")
        + f", or lower boost_strength (now {config.boost_strength:g})"
    )
    if bad:
        raise UnsoundTaskError(
            f"task {name!r} diverged: {', '.join(bad)} hold NaN or Inf; nothing was committed. "
            f"{hint[0].upper()}{hint[1:]}"
        )
    floor = chance(classes)
    if not (math.isfinite(task.record.val_accuracy) and task.record.val_accuracy > floor):
        raise UnsoundTaskError(
            f"task {name!r} reached validation accuracy {task.record.val_accuracy:.4f}, not above "
            f"chance ({floor:.4f} for {classes} classes); nothing was committed. Check that "
            f"the labels belong to the inputs, train longer (epochs {config.epochs}, "
            f"retrain_epochs {config.retrain_epochs}), or {hint}"
        )
