"""Learning one task's subnetwork: train, prune by saliency, retrain (the recipe in DESIGN.md).

``TaskConfig.method`` picks how the subnetwork is found: ``prune`` (that recipe; before
retraining, ``retrain`` may reset the kept values: rewind to task start, late rewind to the
iterate after ``rewind_epoch`` epochs, re-initialise, or sign × constant; retraining anneals
the learning rate from ``lr`` to 0 by a half cosine), ``supermask``
(supermask.py: scores over untrained weights) or ``rigl`` (rigl.py: dynamic sparse training).

Nothing here writes the backbone. Weights owned by earlier tasks enter the forward pass
as constants; the task trains its own copy of the free weights (``free`` below), whose
values at owned positions are never read, so no gradient, momentum or weight decay can
reach an owned weight. The model commits the result afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import saliency, structured
from .backbone import Backbone, forward_layers, init_weight
from .config import Phase, ProgressCallback, ProgressEvent, TaskConfig
from .data import TaskData
from .kwta import KWinners, KWinnersState, resolve_k

EVAL_BATCH = 1024
STEP_EVENT_EVERY = 50

History = list[dict[str, float | int | str]]
# called after every optimizer step with (global step, inputs, targets, optimizer)
StepHook = Callable[[int, Tensor, Tensor, torch.optim.Optimizer], None]


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
        # structured pruning: kept rows (units or channels) per layer; all until pruned
        self.units = [torch.ones(layer.weight_shape[0], dtype=torch.bool) for layer in spec.layers]
        self.k_config = ks

    def restrict_units(self, units: Sequence[Tensor]) -> None:
        """Only the kept ``units`` may be active: each k-WTA picks among them, with a
        fractional k taken of the kept units (a count must fit them)."""
        self.units = [u.clone() for u in units]
        for layer, kwta, rows, k in zip(
            self.spec.layers, self.kwta, self.units, self.k_config, strict=True
        ):
            kept = int(rows.sum()) * structured.row_units(layer)
            kwta.restrict(rows, resolve_k(k, kept))  # type: ignore[operator]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates (every parameter that requires a gradient)."""
        return [p for p in self.parameters() if p.requires_grad]

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
        self.restore(self.initial)

    def snapshot(self) -> list[Tensor]:
        """A copy of every trainable value (free weights, biases, head), for late rewinding."""
        return [p.detach().clone() for p in self.parameters()]

    @torch.no_grad()
    def restore(self, values: Sequence[Tensor]) -> None:
        """Set every trainable value to ``values`` (a ``snapshot``); owned weights are
        never read from ``free``, so this cannot reach them."""
        for p, v in zip(self.parameters(), values, strict=True):
            p.copy_(v)

    @torch.no_grad()
    def reinit(self, generator: torch.Generator) -> None:
        """Liu et al. 2019: fresh random values (same distribution as the backbone's
        initialisation) for the kept free weights, a fresh head, zero biases."""
        for p, t in zip(self.free, self.trainable, strict=True):
            p[t] = init_weight(p.shape, generator)[t]
        for b in self.biases:
            b.zero_()
        bound = 1.0 / self.spec.features**0.5
        self.head.weight.uniform_(-bound, bound, generator=generator)
        self.head.bias.uniform_(-bound, bound, generator=generator)

    @torch.no_grad()
    def sign_constant(self) -> list[float]:
        """Zhou et al. 2019: each kept free weight becomes sign(initial value) × the layer's
        constant (std of the layer's initial free values); biases and head are rewound.
        Returns the per-layer constants."""
        free_count = len(self.free)
        constants = []
        for i, (p, t, o) in enumerate(zip(self.free, self.trainable, self.owned, strict=True)):
            start = self.initial[i]
            c = float(start[~o].std()) if int((~o).sum()) > 1 else float(start.abs().mean())
            signs = torch.where(start >= 0, 1.0, -1.0)
            p[t] = (signs * c)[t]
            constants.append(c)
        for p, v in zip(
            list(self.parameters())[free_count:], self.initial[free_count:], strict=True
        ):
            p.copy_(v)
        return constants

    def density(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks)
        return kept / sum(m.numel() for m in self.masks)


def make_optimizer(params: list[nn.Parameter], config: TaskConfig) -> torch.optim.Optimizer:
    """The config's optimizer; fused (one kernel over all parameters: about 5× less CPU per
    step than PyTorch's default per-tensor loop on CPU, the same update rule)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=True,
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


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


class Run:
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
        self.history: History = []
        self.epoch = 0
        self.steps = 0
        self.rewind_point: list[Tensor] | None = None

    @classmethod
    def create(
        cls,
        backbone: Backbone,
        owned: Sequence[Tensor],
        train: TaskData,
        val: TaskData,
        classes: tuple[int, ...],
        config: TaskConfig,
        free_capacity: float,
        progress: ProgressCallback | None = None,
    ) -> Run:
        """A run of ``config.method`` over the backbone's current values; nothing is written."""
        generator = torch.Generator().manual_seed(config.seed)
        index = {c: i for i, c in enumerate(classes)}
        train_targets = torch.tensor([index[int(c)] for c in train.y.tolist()], dtype=torch.int64)
        val_targets = torch.tensor([index[int(c)] for c in val.y.tolist()], dtype=torch.int64)
        trainer: TaskTrainer
        if config.method == "supermask":
            from .supermask import SupermaskTrainer  # imports this module

            trainer = SupermaskTrainer(backbone, owned, len(classes), config, generator)
        else:
            trainer = TaskTrainer(backbone, owned, len(classes), config, generator)
        return cls(
            trainer,
            train,
            train_targets,
            val,
            val_targets,
            config,
            free_capacity,
            progress,
            generator,
        )

    def emit(
        self,
        phase: Phase,
        step: int,
        loss: float,
        acc: float,
        extra: dict[str, float] | None = None,
    ) -> None:
        event = ProgressEvent(
            phase,
            self.epoch,
            step,
            loss,
            acc,
            self.trainer.density(),
            self.free_capacity,
            dict(extra or {}),
        )
        if step == 0 or phase in ("prune", "commit"):
            self.history.append(
                {
                    "phase": phase,
                    "epoch": self.epoch,
                    "loss": loss,
                    "accuracy": acc,
                    "density": event.density,
                    **(extra or {}),
                }
            )
        if self.progress is not None:
            self.progress(event)

    def fit(
        self,
        phase: Phase,
        epochs: int,
        after_step: StepHook | None = None,
        after_epoch: Callable[[int], None] | None = None,
        anneal: bool = False,
    ) -> None:
        """Train what the trainer trains (free weights in the current mask, biases and
        head; scores for a supermask) for ``epochs``; hooks run after each step/epoch.

        ``anneal``: the learning rate falls from ``config.lr`` to 0 over the phase's steps
        along a half cosine (SGDR without restarts, Loshchilov & Hutter 2017), so the
        phase ends at a settled iterate rather than wherever the last constant-rate
        steps left it."""
        if epochs == 0:
            return
        net = self.trainer
        optimizer = make_optimizer(net.trainable_parameters(), self.config)
        schedule = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=epochs * self.steps_per_epoch()
            )
            if anneal
            else None
        )
        net.train()
        for done in range(1, epochs + 1):
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
                self.steps += 1
                if schedule is not None:
                    schedule.step()
                total += float(loss.detach()) * len(y)
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                if after_step is not None:
                    after_step(self.steps, x, y, optimizer)
                if self.progress is not None and step % STEP_EVENT_EVERY == 0:
                    self.emit(phase, step, total / seen, correct / seen)
            for layer in net.kwta:
                layer.update_boost_strength()  # type: ignore[operator]
            if after_epoch is not None:
                after_epoch(done)
            self.emit(phase, 0, total / seen, accuracy(net, self.val, self.val_targets))
        net.train()

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch over the training data."""
        return -(-len(self.train_data) // self.config.batch_size)

    def train_dense(self) -> None:
        """The dense phase (``epochs``); for ``late_rewind`` it keeps the values reached
        after ``rewind_epoch`` epochs as the rewind point."""
        config = self.config
        if config.retrain != "late_rewind":
            self.fit("train", config.epochs)
            return

        def keep(done: int) -> None:
            if done == config.rewind_epoch:
                self.rewind_point = self.trainer.snapshot()

        if config.rewind_epoch == 0:
            self.rewind_point = self.trainer.snapshot()
        self.fit("train", config.epochs, after_epoch=keep)

    def reset(self) -> None:
        """Before retraining: apply ``config.retrain`` to the task's trainable values."""
        retrain, net = self.config.retrain, self.trainer
        if retrain == "rewind":
            net.rewind()
        elif retrain == "late_rewind":
            if self.rewind_point is None:
                raise RuntimeError("late_rewind: the dense phase has not been run")
            net.restore(self.rewind_point)
        elif retrain == "reinit":
            net.reinit(self.generator)
        elif retrain == "sign_constant":
            net.sign_constant()

    def prune(self, density: float, round_: int = 1) -> None:
        """Keep the most salient ``density`` of each layer among the current mask.

        The round (1-based) and its target density go into the history and the event."""
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
        extra = {"round": float(round_), "target_density": density}
        if config.structure == "units":
            units, masks = structured.structured_masks(
                net.spec, scores, net.masks, net.units, density, config.saliency == "magnitude"
            )
            net.restrict_units(units)
            extra["kept_units"] = sum(int(u.sum()) for u in units) / sum(u.numel() for u in units)
        else:
            masks = [
                saliency.top_mask(s, m, saliency.keep_count(density, m.numel()))
                for s, m in zip(scores, net.masks, strict=True)
            ]
        net.set_masks(masks)
        net.train()
        self.emit("prune", 0, float("nan"), accuracy(net, self.val, self.val_targets), extra)

    def prune_recipe(self) -> None:
        """Train → prune (one-shot or iterative) → reset per ``retrain`` → retrain."""
        config = self.config
        self.train_dense()
        schedule = saliency.density_schedule(config.density, config.prune_rounds)
        for r, density in enumerate(schedule, 1):
            self.prune(density, r)
            self.reset()
            # fine-tuning the pruned subnetwork anneals its learning rate: at a constant
            # rate the retrained accuracy swings by up to ~1 point from one epoch to the
            # next (Split-MNIST digits 2/3), and the task is frozen wherever it stops
            self.fit("retrain", config.retrain_epochs, anneal=True)

    def result(self, start: float) -> Subnetwork:
        """The learned subnetwork (not committed)."""
        trainer = self.trainer
        val_accuracy = accuracy(trainer, self.val, self.val_targets)
        trainer.eval()
        head_weight = trainer.head.weight.detach().clone()
        if self.config.structure == "units":  # removed units lose their head column too
            last = trainer.spec.layers[-1]
            features = trainer.units[-1].repeat_interleave(structured.row_units(last))
            head_weight[:, ~features] = 0.0
        return Subnetwork(
            masks=tuple(trainer.masks),
            weights=tuple(p.detach().clone() for p in trainer.free),
            biases=tuple(b.detach().clone() for b in trainer.biases),
            kwta=tuple(layer.state() for layer in trainer.kwta),  # type: ignore[operator]
            head_weight=head_weight,
            head_bias=trainer.head.bias.detach().clone(),
            val_accuracy=val_accuracy,
            history=tuple(self.history),
            seconds=time.perf_counter() - start,
        )


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
    """Find the task's subnetwork by ``config.method`` without committing: ``prune`` (train →
    prune, one-shot or iterative → retrain), ``supermask`` or ``rigl``."""
    start = time.perf_counter()
    run = Run.create(backbone, owned, train, val, classes, config, free_capacity, progress)
    if config.method == "supermask":
        from .supermask import learn_supermask

        learn_supermask(run)
    elif config.method == "rigl":
        from .rigl import learn_rigl

        learn_rigl(run)
    else:
        run.prune_recipe()
    return run.result(start)
