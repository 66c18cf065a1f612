"""One learn of a task's subnetwork, phase by phase (the recipe in DESIGN.md).

A ``Run`` holds the trainer, the data and the history; its methods are the recipe's
phases: train, prune by saliency (one-shot or iterative), reset the kept values per
``TaskConfig.retrain`` (rewind to task start, late rewind to the iterate after
``rewind_epoch`` epochs, re-initialise, or sign × constant), and retrain with the learning
rate annealed from ``lr`` to 0 by a half cosine. supermask.py and rigl.py drive a Run
their own way; learner.py picks the method.

The trainer lives on the run's device; the data stays on the CPU (shuffled and split as
there) and goes to the device a batch at a time; ``result`` brings the task back to the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor

from . import saliency, structured
from .backbone import Backbone
from .config import AUTO, Epochs, Phase, ProgressCallback, ProgressEvent, Stopped, TaskConfig
from .data import TaskData
from .task import Task, TaskRecord
from .trainer import Checkpoint, TaskTrainer, accuracy, make_optimizer

STEP_EVENT_EVERY = 50
# auto retraining: the lr is cut by LR_CUT at a plateau, LR_CUTS times, then the phase stops
LR_CUT = 0.1
LR_CUTS = 2

History = list[dict[str, float | int | str]]
# called after every optimizer step with (global step, inputs, targets, optimizer)
StepHook = Callable[[int, Tensor, Tensor, torch.optim.Optimizer], None]


class Run:
    """State of one learn: the trainer, data, events; one method per recipe phase."""

    def __init__(
        self,
        trainer: TaskTrainer,
        classes: tuple[int, ...],
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
        self.classes = classes
        self.train_data = TaskData(train.x, train_targets)
        self.val, self.val_targets = val, val_targets
        self.config = config
        self.free_capacity = free_capacity
        self.progress = progress
        self.generator = generator
        self.device = trainer.device
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
        trainer_type: type[TaskTrainer] = TaskTrainer,
        device: torch.device | None = None,
        candidates: Sequence[Tensor] | None = None,
    ) -> Run:
        """A run over the backbone's current values with a ``trainer_type`` network on
        ``device`` (default the CPU) whose mask stays within ``candidates`` (None = every
        weight); nothing is written."""
        generator = torch.Generator().manual_seed(config.seed)
        index = {c: i for i, c in enumerate(classes)}
        train_targets = torch.tensor([index[int(c)] for c in train.y.tolist()], dtype=torch.int64)
        val_targets = torch.tensor([index[int(c)] for c in val.y.tolist()], dtype=torch.int64)
        trainer = trainer_type(backbone, owned, len(classes), config, generator, device, candidates)
        return cls(
            trainer,
            classes,
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
        stopped: Stopped | None = None,
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
            stopped,
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
                    **({"stopped": stopped} if stopped else {}),
                }
            )
        if self.progress is not None:
            self.progress(event)

    def fit(
        self,
        phase: Phase,
        epochs: Epochs,
        after_step: StepHook | None = None,
        after_epoch: Callable[[int], None] | None = None,
        anneal: bool = False,
        min_epochs: int = 0,
    ) -> None:
        """Train what the trainer trains (free weights in the current mask, biases and
        head; scores for a supermask) for ``epochs``; hooks run after each step/epoch.

        ``anneal``: the learning rate falls from ``config.lr`` to 0 over the phase's steps
        along a half cosine (SGDR without restarts, Loshchilov & Hutter 2017), so the
        phase ends at a settled iterate rather than wherever the last constant-rate
        steps left it.

        ``epochs="auto"``: epochs run until the validation accuracy (measured after every
        epoch) has not improved for ``config.patience`` periods (never before
        ``min_epochs``), at most ``config.max_epochs`` periods, and the phase ends at its
        best epoch's iterate (of equal ones, the latest). A period is one epoch, or on a
        small data set the fewest epochs that make ``PERIOD_STEPS`` optimizer steps
        (``TaskConfig.epochs_per_period``): counted in epochs, a 540-example task stopped
        after a few dozen steps, 3-15 points short of a dense network (RESULTS.md).
        Annealed, the lr is cut by ``LR_CUT`` at each plateau instead of following the
        cosine, and the phase stops at the plateau after ``LR_CUTS`` cuts.
        Why: the cosine needs the phase's length in advance; over max_epochs it is still
        near ``lr`` where a plateau stops the phase, so the kept iterate is not annealed,
        and cutting at plateaus ends at lr × LR_CUT**LR_CUTS whenever a plateau stops it;
        measured, cuts keep more accuracy (test: 96.12 vs 95.28 % on scikit-learn's digits,
        96.01 vs 95.80 % on Permuted MNIST; benchmarks/RESULTS.md, "Auto epochs")."""
        if epochs == 0:
            return
        net, config = self.trainer, self.config
        auto = epochs == AUTO
        per_epoch = self.steps_per_epoch()
        periods = config.epochs_per_period(per_epoch) if auto else 1
        limit = config.bound(epochs, per_epoch)
        optimizer = make_optimizer(net.trainable_parameters(), config)
        schedule = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=limit * per_epoch)
            if anneal and not auto
            else None
        )
        kept: tuple[int, float, Checkpoint | None] = (0, -1.0, None)  # epoch, accuracy, iterate
        waited = cuts = 0
        net.train()
        for done in range(1, limit + 1):
            self.epoch += 1
            loss = self.train_epoch(phase, optimizer, schedule, after_step)
            for layer in net.kwta:
                layer.update_boost_strength()  # type: ignore[operator]
            if after_epoch is not None:
                after_epoch(done)
            acc = accuracy(net, self.val, self.val_targets)
            waited = 0 if acc > kept[1] else waited + 1
            if acc >= kept[1]:
                kept = (done, acc, net.checkpoint() if auto else None)
            stopped: Stopped | None = ("max_epochs" if auto else "fixed") if done == limit else None
            plateau = waited >= config.patience * periods and done >= min_epochs
            if auto and plateau and stopped is None:
                if anneal and cuts < LR_CUTS:
                    cuts, waited = cuts + 1, 0
                    for group in optimizer.param_groups:
                        group["lr"] *= LR_CUT
                else:
                    stopped = "plateau"
            if stopped is None:
                self.emit(phase, 0, loss, acc)
                continue
            if not auto:
                kept = (done, acc, None)  # a fixed count keeps its last iterate
            extra = {
                "epochs": float(done),
                "kept_epoch": float(kept[0]),
                "kept_accuracy": kept[1],
                "period_epochs": float(periods),
            }
            self.emit(phase, 0, loss, acc, extra, stopped)
            break
        if kept[2] is not None:
            net.resume(kept[2])
        net.train()

    def train_epoch(
        self,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler | None,
        after_step: StepHook | None,
    ) -> float:
        """One pass over the shuffled training data; returns its mean loss."""
        net = self.trainer
        total, seen, correct = 0.0, 0, 0
        for step, (x, y) in enumerate(self.batches(), 1):
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
        return total / seen

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The training data's shuffled mini-batches (drawn by the run's generator), each
        moved to the run's device."""
        for x, y in self.train_data.batches(self.config.batch_size, self.generator):
            yield x.to(self.device), y.to(self.device)

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
        self.fit("train", config.epochs, after_epoch=keep, min_epochs=config.rewind_epoch)

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
            batches = list(islice(self.batches(), config.saliency_batches))

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

    def result(self, name: str, task_id: int, start: float) -> Task:
        """The learned task, ready to commit as task ``task_id`` (nothing is written): its
        own values are the trained free weights its mask claims."""
        trainer = self.trainer
        val_accuracy = accuracy(trainer, self.val, self.val_targets)
        trainer.eval()
        head_weight = trainer.head.weight.detach().clone()
        if self.config.structure == "units":  # removed units lose their head column too
            last = trainer.spec.layers[-1]
            features = trainer.units[-1].repeat_interleave(structured.row_units(last))
            head_weight[:, ~features] = 0.0
        masks = tuple(trainer.masks)
        claimed = [m & ~o for m, o in zip(masks, trainer.owned, strict=True)]
        cpu = torch.device("cpu")  # what is committed and stored lives on the CPU
        owned = sum(int(c.sum()) for c in claimed)
        record = TaskRecord(
            id=task_id,
            name=name,
            classes=self.classes,
            density=tuple(int(m.sum()) / m.numel() for m in masks),  # exact, not float32
            weights_owned=owned,
            weights_read=sum(int(m.sum()) for m in masks) - owned,
            val_accuracy=val_accuracy,
            free_capacity=tuple(
                int((~o & ~c).sum()) / o.numel()
                for o, c in zip(trainer.owned, claimed, strict=True)
            ),
            seconds=time.perf_counter() - start,
            history=tuple(self.history),
        )
        return Task(
            record=record,
            config=self.config,
            masks=tuple(m.to(cpu) for m in masks),
            own_values=tuple(
                p.detach()[c].to(cpu, copy=True) for p, c in zip(trainer.free, claimed, strict=True)
            ),
            biases=tuple(b.detach().to(cpu, copy=True) for b in trainer.biases),
            kwta=tuple(layer.state().to(cpu) for layer in trainer.kwta),  # type: ignore[operator]
            head_weight=head_weight.to(cpu),
            head_bias=trainer.head.bias.detach().to(cpu, copy=True),
        )
