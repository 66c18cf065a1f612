"""Learning one task's subnetwork by ``TaskConfig.method``: ``prune`` (train, prune by
saliency, retrain: recipe.py), ``supermask`` (supermask.py: scores over untrained weights)
or ``rigl`` (rigl.py: dynamic sparse training). The result is a task ready to commit."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from .backbone import Backbone
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
    trainer_type = SupermaskTrainer if config.method == "supermask" else TaskTrainer
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
    if config.method == "supermask":
        learn_supermask(run)
    elif config.method == "rigl":
        learn_rigl(run)
    else:
        run.prune_recipe()
    return run.result(name, task_id, start)
