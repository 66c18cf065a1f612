"""Learning one task's subnetwork by ``TaskConfig.method``: ``prune`` (train, prune by
saliency, retrain: recipe.py), ``supermask`` (supermask.py: scores over untrained weights)
or ``rigl`` (rigl.py: dynamic sparse training); or, when some layer's free weights cannot
cover the task's budget, by capacity.py's scores over frozen weights (plus the free ones
left). The result is a task ready to commit."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from .backbone import Backbone
from .capacity import CapacityTrainer, learn_capacity, learned_as
from .config import ProgressCallback, TaskConfig
from .data import TaskData
from .recipe import Run
from .rigl import learn_rigl
from .supermask import SupermaskTrainer, learn_supermask
from .task import Task
from .trainer import TaskTrainer


def learn_task(
    backbone: Backbone,
    owned: Sequence[Tensor],
    train: TaskData,
    val: TaskData,
    name: str,
    task_id: int,
    config: TaskConfig,
    free_capacity: float,
    progress: ProgressCallback | None = None,
    device: torch.device | None = None,
    candidates: Sequence[Tensor] | None = None,
) -> Task:
    """Learn task ``name`` (to be committed as ``task_id``) over the backbone's current
    values on ``device`` (default the CPU); ``owned``: per layer, the weights earlier tasks
    own; ``candidates``: per layer, the weights its mask may cover (None = all: free and
    every earlier task's). Nothing is written; the task returned lives on the CPU."""
    start = time.perf_counter()
    how = learned_as(config.density, [int((~o).sum()) for o in owned], [o.numel() for o in owned])
    trainer_type: type[TaskTrainer] = (
        SupermaskTrainer if config.method == "supermask" else TaskTrainer
    )
    if how != "free":
        trainer_type = CapacityTrainer
    run = Run.create(
        backbone,
        owned,
        train,
        val,
        train.classes,
        config,
        free_capacity,
        progress,
        trainer_type,
        device,
        candidates,
    )
    if how != "free":
        learn_capacity(run)
    elif config.method == "supermask":
        learn_supermask(run)
    elif config.method == "rigl":
        learn_rigl(run)
    else:
        run.prune_recipe()
    task = run.result(name, task_id, start)
    return dataclasses.replace(task, record=dataclasses.replace(task.record, learned_as=how))
