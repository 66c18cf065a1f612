"""sparsecl inside Avalanche: a strategy to use in place of Naive or PackNet.

``SparseCLStrategy`` is an Avalanche ``SupervisedTemplate``: ``train(experience)`` learns
the experience as a new task (one task per task label) with ``SparseCL.learn_task``, and
``eval(stream)`` runs Avalanche's own evaluation loop, so the EvaluationPlugin, its
metrics (accuracy, forgetting, BWT, ...) and loggers work unchanged. Training callbacks
fire per experience; per-epoch and per-iteration ones do not, since sparsecl's recipe
(train, prune, retrain) runs inside ``learn_task``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from avalanche.models import MultiTaskModule
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from .backbone import BackboneSpec
from .config import DEFAULT_BACKBONE, TaskConfig
from .data import TaskData, from_avalanche
from .errors import TaskExistsError
from .model import SparseCL

MISSING = -1e9  # score of labels a task does not have: never the arg-max


class SparseCLModule(MultiTaskModule):
    """Avalanche's view of a SparseCL learner: scores indexed by label value, per task label."""

    def __init__(self, learner: SparseCL) -> None:
        super().__init__()
        self.learner = learner
        self.task_names: dict[int, str] = {}

    def forward(self, x: Tensor, task_labels: Tensor | int | None) -> Tensor:
        if task_labels is None:
            raise ValueError("sparsecl needs task labels: each task has its own subnetwork")
        if isinstance(task_labels, int):
            task_labels = torch.full((x.shape[0],), task_labels, dtype=torch.long)
        out = torch.full((x.shape[0], max(1, self.max_class_label)), MISSING)
        for task in torch.unique(task_labels).tolist():
            rows = task_labels == task
            out[rows] = self.forward_single_task(x[rows], int(task))
        return out

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        width = max(1, self.max_class_label)
        out = torch.full((x.shape[0], width), MISSING)
        name = self.task_names.get(task_label)
        if name is None:  # not learned yet (Avalanche evaluates the whole stream)
            return out
        classes = torch.tensor(self.learner.task(name).classes)
        out[:, classes] = self.learner.logits(name, x.float())
        return out


class SparseCLStrategy(SupervisedTemplate):
    """Task-incremental sparsecl as an Avalanche strategy; task labels must be given."""

    def __init__(
        self,
        *,
        backbone: str | BackboneSpec = DEFAULT_BACKBONE,
        config: TaskConfig | None = None,
        val_fraction: float = 0.1,
        eval_mb_size: int = 256,
        plugins: Sequence[SupervisedPlugin] | None = None,
        evaluator: EvaluationPlugin | Callable[[], EvaluationPlugin] = default_evaluator,
        seed: int = 0,
        task_name: Callable[[int], str] = lambda label: f"task-{label}",
        train_device: str = "auto",
        **kwargs: Any,
    ) -> None:
        """``val_fraction`` of each experience is held out for validation (what auto epochs
        stop on); 0 validates on the training data itself (to train on exactly what
        baselines train on: auto epochs then stop when the training accuracy plateaus).
        ``train_device``: where tasks are trained (``SparseCL``'s ``device``); Avalanche's
        own ``device`` stays the CPU, where the engine evaluates the committed tasks."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        self.learner = SparseCL(backbone, seed=seed, device=train_device)
        self.config = config or TaskConfig()
        self.val_fraction = val_fraction
        self.task_name = task_name
        # Avalanche's template requires an optimizer; sparsecl makes its own per task.
        placeholder = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
        super().__init__(
            model=SparseCLModule(self.learner),
            optimizer=placeholder,
            train_mb_size=self.config.batch_size,
            train_epochs=self.config.total_epochs,
            eval_mb_size=eval_mb_size,
            device="cpu",
            plugins=list(plugins or []),
            evaluator=evaluator,
            **kwargs,
        )

    def make_optimizer(self, **kwargs: Any) -> None:
        """Nothing to do: ``learn_task`` builds its own optimizer per task."""

    def make_train_dataloader(self, **kwargs: Any) -> None:
        """Nothing to do: ``learn_task`` batches the experience's tensors itself."""

    def _train_exp(self, experience: Any, eval_streams: Any = None, **kwargs: Any) -> None:
        labels = set(experience.task_labels)
        if len(labels) != 1:
            raise ValueError(f"an experience must carry one task label, got {sorted(labels)}")
        label = labels.pop()
        name = self.task_name(label)
        if name in self.learner.tasks:
            raise TaskExistsError(f"task label {label} ({name!r}) was already learned")
        data: TaskData = from_avalanche(experience)
        train, val = (data, data) if self.val_fraction == 0 else data.split(self.val_fraction)
        self.learner.learn_task(name, train, val, self.config)
        assert isinstance(self.model, SparseCLModule)
        self.model.task_names[label] = name


__all__ = ["SparseCLModule", "SparseCLStrategy"]
