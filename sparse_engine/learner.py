"""Learning one task's subnetwork: train, prune by saliency, retrain (the recipe in DESIGN.md).

Nothing here writes the backbone. Weights owned by earlier tasks enter the forward pass
as constants; the task trains its own copy of the free weights (``free`` below), whose
values at owned positions are never read, so no gradient, momentum or weight decay can
reach an owned weight. The model commits the result afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import saliency
from .backbone import Backbone, forward_layers
from .config import Phase, ProgressCallback, ProgressEvent, TaskConfig
from .data import TaskData
from .kwta import KWinners, KWinnersState

EVAL_BATCH = 1024
STEP_EVENT_EVERY = 50


@dataclass(frozen=True)
class Subnetwork:
    """A learned, not yet committed subnetwork."""

    masks: tuple[Tensor, ...]
    weights: tuple[Tensor, ...]  # trained values; only positions in mask and free are new
    biases: tuple[Tensor, ...]
    kwta: tuple[KWinnersState, ...]
    head_weight: Tensor
    head_bias: Tensor
    val_accuracy: float
    history: tuple[dict[str, float | int | str], ...]
    seconds: float


class TaskTrainer(nn.Module):
    """The network of the task being learned: backbone constants + its own trainable parts."""

    def __init__(
        self,
        backbone: Backbone,
        owned: Sequence[Tensor],
        classes: int,
        config: TaskConfig,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        spec = backbone.spec
        self.spec = spec
        self.owned = [o.clone() for o in owned]
        self.constants = [w.detach().clone() for w in backbone.weights]
        self.free = nn.ParameterList(nn.Parameter(w.clone()) for w in self.constants)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(layer.out_shape[0])) for layer in spec.layers
        )
        ks = config.k_per_layer(len(spec.layers))
        self.kwta = nn.ModuleList(
            KWinners(
                layer.units,
                k,
                boost_strength=config.boost_strength,
                boost_strength_factor=config.boost_strength_factor,
                duty_cycle_period=config.duty_cycle_period,
            )
            for layer, k in zip(spec.layers, ks, strict=True)
        )
        self.head = nn.Linear(spec.features, classes)
        bound = 1.0 / spec.features**0.5
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound, generator=generator)
            self.head.bias.uniform_(-bound, bound, generator=generator)
        self.initial = [p.detach().clone() for p in self.parameters()]
        self.set_masks([torch.ones_like(o) for o in self.owned])

    def set_masks(self, masks: Sequence[Tensor]) -> None:
        """Restrict the subnetwork to ``masks``; the trainable part is mask ∩ free."""
        self.masks = [m.clone() for m in masks]
        self.trainable = [m & ~o for m, o in zip(self.masks, self.owned, strict=True)]
        zero = torch.zeros(())
        self.fixed = [
            torch.where(m & o, c, zero)
            for m, o, c in zip(self.masks, self.owned, self.constants, strict=True)
        ]

    def weights(self) -> list[Tensor]:
        """Effective weights: mask ⊙ (owned constants where owned, own values where free)."""
        return [
            torch.where(t, p, f)
            for t, p, f in zip(self.trainable, self.free, self.fixed, strict=True)
        ]

    def forward_with(self, weights: Sequence[Tensor], x: Tensor) -> Tensor:
        return self.head(forward_layers(self.spec, x, weights, list(self.biases), self.kwta))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with(self.weights(), x)

    @torch.no_grad()
    def rewind(self) -> None:
        """Lottery-ticket rewinding: every trainable value back to its value at task start."""
        for p, p0 in zip(self.parameters(), self.initial, strict=True):
            p.copy_(p0)

    def density(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks)
        return kept / sum(m.numel() for m in self.masks)


def make_optimizer(params: list[nn.Parameter], config: TaskConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def accuracy(net: nn.Module, data: TaskData, targets: Tensor) -> float:
    """Fraction of ``data`` whose arg-max output equals ``targets`` (class indices)."""
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, len(data), EVAL_BATCH):
        logits = net(data.x[start : start + EVAL_BATCH])
        correct += int((logits.argmax(1) == targets[start : start + EVAL_BATCH]).sum())
    net.train(was_training)
    return correct / len(data)


class _Run:
    """State of one learn: the trainer, data, events; one method per recipe phase."""

    def __init__(
        self,
        trainer: TaskTrainer,
        train: TaskData,
        train_targets: Tensor,
        val: TaskData,
        val_targets: Tensor,
        config: TaskConfig,
        free_capacity: float,
        progress: ProgressCallback | None,
        generator: torch.Generator,
    ) -> None:
        self.trainer = trainer
        self.train_data = TaskData(train.x, train_targets)
        self.val, self.val_targets = val, val_targets
        self.config = config
        self.free_capacity = free_capacity
        self.progress = progress
        self.generator = generator
        self.history: list[dict[str, float | int | str]] = []
        self.epoch = 0

    def emit(self, phase: Phase, step: int, loss: float, acc: float) -> None:
        event = ProgressEvent(
            phase, self.epoch, step, loss, acc, self.trainer.density(), self.free_capacity
        )
        if step == 0 or phase in ("prune", "commit"):
            self.history.append(
                {
                    "phase": phase,
                    "epoch": self.epoch,
                    "loss": loss,
                    "accuracy": acc,
                    "density": event.density,
                }
            )
        if self.progress is not None:
            self.progress(event)

    def fit(self, phase: Phase, epochs: int) -> None:
        """Train the free weights in the current mask, the biases and the head."""
        if epochs == 0:
            return
        net = self.trainer
        optimizer = make_optimizer(list(net.parameters()), self.config)
        net.train()
        for _ in range(epochs):
            self.epoch += 1
            total, seen, correct = 0.0, 0, 0
            for step, (x, y) in enumerate(
                self.train_data.batches(self.config.batch_size, self.generator), 1
            ):
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(y)
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                if self.progress is not None and step % STEP_EVENT_EVERY == 0:
                    self.emit(phase, step, total / seen, correct / seen)
            for layer in net.kwta:
                layer.update_boost_strength()  # type: ignore[operator]
            self.emit(phase, 0, total / seen, accuracy(net, self.val, self.val_targets))
        net.train()

    def prune(self, density: float) -> None:
        """Keep the most salient ``density`` of each layer among the current mask."""
        net, config = self.trainer, self.config
        net.eval()
        weights = [w.detach() for w in net.weights()]
        if config.saliency == "magnitude":
            scores = saliency.magnitude(weights)
        else:
            batches = list(
                islice(
                    self.train_data.batches(config.batch_size, self.generator),
                    config.saliency_batches,
                )
            )

            def loss_fn(ws: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
                return F.cross_entropy(net.forward_with(ws, x), y)

            if config.saliency == "obd":
                scores = saliency.obd(loss_fn, weights, batches, self.generator)
            else:
                scores = saliency.taylor(loss_fn, weights, batches)
        masks = [
            saliency.top_mask(s, m, saliency.keep_count(density, m.numel()))
            for s, m in zip(scores, net.masks, strict=True)
        ]
        net.set_masks(masks)
        net.train()
        self.emit("prune", 0, float("nan"), accuracy(net, self.val, self.val_targets))


def learn_subnetwork(
    backbone: Backbone,
    owned: Sequence[Tensor],
    train: TaskData,
    val: TaskData,
    classes: tuple[int, ...],
    config: TaskConfig,
    free_capacity: float,
    progress: ProgressCallback | None = None,
) -> Subnetwork:
    """Run the recipe (train → prune, one-shot or iterative → retrain) without committing."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    index = {c: i for i, c in enumerate(classes)}
    train_targets = torch.tensor([index[int(c)] for c in train.y.tolist()], dtype=torch.int64)
    val_targets = torch.tensor([index[int(c)] for c in val.y.tolist()], dtype=torch.int64)
    trainer = TaskTrainer(backbone, owned, len(classes), config, generator)
    run = _Run(
        trainer, train, train_targets, val, val_targets, config, free_capacity, progress, generator
    )

    run.fit("train", config.epochs)
    for density in saliency.density_schedule(config.density, config.prune_rounds):
        run.prune(density)
        if config.retrain == "rewind":
            trainer.rewind()
        run.fit("retrain", config.retrain_epochs)

    val_accuracy = accuracy(trainer, val, val_targets)
    trainer.eval()
    return Subnetwork(
        masks=tuple(trainer.masks),
        weights=tuple(p.detach().clone() for p in trainer.free),
        biases=tuple(b.detach().clone() for b in trainer.biases),
        kwta=tuple(layer.state() for layer in trainer.kwta),  # type: ignore[operator]
        head_weight=trainer.head.weight.detach().clone(),
        head_bias=trainer.head.bias.detach().clone(),
        val_accuracy=val_accuracy,
        history=tuple(run.history),
        seconds=time.perf_counter() - start,
    )
