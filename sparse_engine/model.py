"""The continual learner: one backbone, its owner map, and the committed tasks."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from . import reuse
from .backbone import Backbone, BackboneSpec
from .config import HOLD_OUT, ProgressCallback, ProgressEvent, TaskConfig
from .data import TaskData, as_inputs, as_task, split_order
from .device import resolve_device
from .engine import InferenceEngine
from .errors import (
    InvalidInputError,
    NoFreeCapacityError,
    TaskExistsError,
    UnknownTaskError,
    UnsoundTaskError,
    brief,
)
from .kwta import resolve_k
from .learner import learn_task
from .owners import MAX_TASKS, OwnerMap
from .plan import Plan
from .saliency import keep_count
from .soundness import check_sound
from .structured import row_units
from .task import Task, TaskDeletion, TaskNet, TaskRecord
from .taskfree import (
    ENTROPY_TEMPERATURE,
    TEMPERATURE,
    IdentityBank,
    TaskFreePrediction,
    entropy_scores,
    fit_identity,
)
from .tune import (
    CANDIDATES,
    TOLERANCE,
    KValue,
    Trial,
    TuneReport,
    check_candidates,
    choose,
    trial_configs,
)

MAX_NAME = 128
# ASCII only: Unicode look-alikes ('dígits', Cyrillic 'а') would pass for another task's name
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def check_name(name: str) -> None:
    """Task names: 1..128 ASCII letters, digits, '_', '-' or '.', not only dots ('.', '..')."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME
        or not _NAME.fullmatch(name)
        or not name.strip(".")
    ):
        raise InvalidInputError(
            f"task name {brief(name)} must be 1..{MAX_NAME} ASCII letters, digits, '_', '-' or "
            "'.', and not only dots"
        )


def free_pool_generator(seed: int, task_id: int) -> torch.Generator:
    """The generator that re-initialises the free pool after task ``task_id``'s commit: a
    function of the backbone's seed and the id alone, so a replay rebuilds it bit for bit."""
    return torch.Generator().manual_seed(seed * 1_000_003 + task_id)


def all_finite(t: Tensor) -> bool:
    """Whether no value of ``t`` is NaN or Inf. On the CPU numpy's one-thread pass: torch
    splits a 64 × 784 batch over its intra-op threads, which under concurrent Predict calls
    cost the server as much CPU as the engine's forward itself (py-spy, 2026-11-30)."""
    if t.is_cpu and not t.requires_grad:
        return bool(np.isfinite(t.numpy()).all())
    return bool(torch.isfinite(t).all())


def finite_scores(logits: Tensor) -> Tensor:
    """``logits`` unless some are NaN/Inf: inputs far outside the training range (say 3e38)
    overflow the network, and a score of NaN is no answer."""
    if not all_finite(logits):
        raise InvalidInputError(
            "the inputs overflow the network (some scores are not finite): send inputs on "
            "the scale the task was trained on (uint8, or float32 in about [0, 1])"
        )
    return logits


def check_shape(spec: BackboneSpec, shape: tuple[int, ...]) -> None:
    """Inputs must be N × (backbone input)."""
    want = math.prod(spec.input_shape)
    if len(shape) < 2 or math.prod(shape[1:]) != want:
        raise InvalidInputError(
            f"inputs of shape {tuple(shape)} do not fit the backbone input "
            f"{spec.input_shape} ({want} values per example)"
        )


def check_inputs(spec: BackboneSpec, x: Any) -> Tensor:
    """Inputs as the backbone takes them: a numpy array or torch tensor converted by
    ``as_inputs`` (uint8 scaled by 1/255, floats to float32, finite), N × (backbone input)."""
    inputs = as_inputs(x)
    check_shape(spec, tuple(inputs.shape))
    return inputs


class SparseCL:
    """Learns tasks one after another as sparse subnetworks of one backbone, forgetting nothing.

    ``device`` (one of ``config.DEVICES`` or a torch device) is where tasks are trained:
    ``auto`` takes a CUDA GPU when torch sees one, else the CPU. The backbone, the owner map
    and the committed tasks stay on the CPU, and the engine serves them there."""

    def __init__(
        self, spec: BackboneSpec | str, seed: int = 0, device: str | torch.device = "auto"
    ) -> None:
        self.spec = BackboneSpec.parse(spec) if isinstance(spec, str) else spec
        self.seed = seed
        self.device = resolve_device(device)
        self.backbone = Backbone(self.spec, seed)
        self.owners = OwnerMap(self.spec)
        self.tasks: dict[str, Task] = {}
        self.last_id = 0  # the last task id committed; ids are never reused, even if deleted
        self.retired: set[int] = set()  # ids of deleted tasks
        self._nets: dict[str, TaskNet] = {}
        self.engine = InferenceEngine(self.spec)
        self._bank: tuple[tuple[Task, ...], IdentityBank] | None = None

    # ---- learning -------------------------------------------------------------------------
    def learn_task(
        self,
        name: str,
        train: TaskData | Any,
        val: TaskData | Any | None = None,
        config: TaskConfig | None = None,
        progress: ProgressCallback | None = None,
    ) -> TaskRecord:
        """Learn and commit task ``name``; raises before changing anything when input is bad.

        ``train``/``val``: TaskData, or (x, y) numpy arrays or torch tensors, a torch dataset
        or an Avalanche experience (``data.as_task``). Without ``val``, ``HOLD_OUT`` of
        ``train`` is held out for validation (seeded by ``config.seed``).
        """
        return self._commit_and_plan(
            self.prepare_task(name, train, val, config, progress), progress
        )

    def _commit_and_plan(self, state: Task, progress: ProgressCallback | None) -> TaskRecord:
        """Commit a prepared task, compile its plan now (not at the first prediction) and
        report the commit to ``progress``."""
        record = self.commit_task(state)
        self.plan(state.name)
        if progress is not None:
            progress(self.commit_event(record))
        return record

    def tune(
        self,
        name: str,
        train: TaskData | Any,
        val: TaskData | Any | None = None,
        config: TaskConfig | None = None,
        progress: ProgressCallback | None = None,
        candidates: Sequence[tuple[float, KValue]] = CANDIDATES,
        tolerance: float = TOLERANCE,
    ) -> tuple[TaskRecord, TuneReport]:
        """``learn_task`` with (density, k) chosen by ``prepare_tuned``: the committed
        task's record and the search's report."""
        state, report = self.prepare_tuned(
            name, train, val, config, progress, candidates, tolerance
        )
        return self._commit_and_plan(state, progress), report

    def prepare_tuned(
        self,
        name: str,
        train: TaskData | Any,
        val: TaskData | Any | None = None,
        config: TaskConfig | None = None,
        progress: ProgressCallback | None = None,
        candidates: Sequence[tuple[float, KValue]] = CANDIDATES,
        tolerance: float = TOLERANCE,
    ) -> tuple[Task, TuneReport]:
        """Try each (density, k) pair of ``candidates`` with ``config``'s other settings
        (tune.py: a trial learns the task, uncommitted, and is scored on the validation
        split), choose the smallest density within ``tolerance`` of the best, and return the
        chosen trial's task (learned with that pair, not committed) and the report.

        Every pair is checked before any trial runs; each trial's phase events reach
        ``progress`` as phase "tune" (end of epoch/phase only) plus one with the report so
        far, then the chosen trial's own events are replayed."""
        start = time.perf_counter()
        config = config or TaskConfig()
        configs = trial_configs(config, check_candidates(candidates, tolerance))
        train = as_task(train)
        val = as_task(val) if val is not None else None
        for c in configs:
            self.check_new_task(name, train, val, c)
        trials: list[Trial] = []
        tasks: list[Task] = []
        unsound: UnsoundTaskError | None = None
        replays: list[list[ProgressEvent]] = []
        sent: TuneReport | None = None  # the last report progress was given: the final one

        def report(chosen: int) -> TuneReport:
            return TuneReport(tuple(trials), chosen, tolerance, time.perf_counter() - start)

        for i, c in enumerate(configs):
            began = time.perf_counter()
            events: list[ProgressEvent] = []

            def relay(
                event: ProgressEvent, events: list[ProgressEvent] = events, trial: int = i + 1
            ) -> None:
                events.append(event)
                if progress is not None and event.step == 0:
                    extra = {**event.extra, "trial": float(trial)}
                    progress(dataclasses.replace(event, phase="tune", stopped=None, extra=extra))

            task = self._learn(name, train, val, c, relay)
            try:
                check_sound(task)
                error = ""
            except UnsoundTaskError as e:
                error, unsound = str(e), e
            k_units = tuple(s.k for s in task.kwta)
            seconds = time.perf_counter() - began
            accuracy = task.record.val_accuracy
            trials.append(Trial(c.density, c.k, k_units, accuracy, seconds, error))
            tasks.append(task)
            replays.append(events)
            if progress is not None:
                last = i == len(configs) - 1
                so_far = sent = report(choose(trials, tolerance) if last else -1)
                progress(
                    ProgressEvent(
                        "tune",
                        i + 1,
                        0,
                        math.nan,
                        task.record.val_accuracy,
                        c.density,
                        self.spec.overall(self.free_capacity()),
                        {"trial": float(i + 1), "seconds": seconds},
                        tune=so_far,
                    )
                )
        chosen = choose(trials, tolerance)
        if chosen < 0 and unsound is not None:  # every trial unsound: the last one's reason
            raise unsound
        if progress is not None:
            for event in replays[chosen]:
                progress(event)
        # the report the last tune event carried, so that the stored one is the same
        return tasks[chosen], sent if sent is not None else report(chosen)

    def commit_event(self, record: TaskRecord) -> ProgressEvent:
        """The progress event that reports a task's commit (overall density, free capacity)."""
        return ProgressEvent(
            "commit",
            0,
            0,
            math.nan,
            record.val_accuracy,
            self.spec.overall(record.density),
            self.spec.overall(record.free_capacity),
        )

    def prepare_task(
        self,
        name: str,
        train: TaskData | Any,
        val: TaskData | Any | None = None,
        config: TaskConfig | None = None,
        progress: ProgressCallback | None = None,
    ) -> Task:
        """Learn task ``name`` without committing it (the model is unchanged until
        ``commit_task``), so a caller can store the result first."""
        config = config or TaskConfig()
        train = as_task(train)
        val = as_task(val) if val is not None else None
        self.check_new_task(name, train, val, config)
        task = self._learn(name, train, val, config, progress)
        check_sound(task)
        return task

    def _learn(
        self,
        name: str,
        train: TaskData,
        val: TaskData | None,
        config: TaskConfig,
        progress: ProgressCallback | None,
    ) -> Task:
        """``prepare_task`` after its checks, before its soundness check."""
        if val is None:
            train, val = train.split(HOLD_OUT, seed=config.seed)
        served = sorted(self.tasks.values(), key=lambda t: t.record.id)
        report, candidates = reuse.choose(
            self.spec, self.backbone.weights, self.owners, served, train, config
        )
        task = learn_task(
            self.backbone,
            self.owners.owned(),
            train,
            val,
            name,
            self.next_id,
            config,
            free_capacity=self.spec.overall(self.free_capacity()),
            progress=progress,
            device=self.device,
            candidates=candidates,
        )
        report = dataclasses.replace(report, owners=reuse.mask_owners(self.owners, task.masks))
        record = dataclasses.replace(task.record, reuse=report)
        return dataclasses.replace(task, record=record, identity=fit_identity(train.x, train.y))

    def check_new_task(
        self, name: str, train: TaskData, val: TaskData | None, config: TaskConfig
    ) -> None:
        """Every reason ``learn_task`` would refuse, checked before any work is done."""
        self.check_inputs(train.x)
        if val is not None:
            self.check_inputs(val.x)
        self.check_labels(name, train.y, val.y if val is not None else None, config)

    def check_labels(
        self, name: str, train_y: Tensor, val_y: Tensor | None, config: TaskConfig
    ) -> None:
        """The checks of ``check_new_task`` that need no inputs: the name, the backbone's
        room for task ids, the label sets and the hold-out split, k for every layer. Free
        weights are not needed: a task they cannot cover is learned over frozen ones
        (capacity.py)."""
        check_name(name)
        if name in self.tasks:
            raise TaskExistsError(f"task {name!r} already exists; choose another name")
        if self.last_id >= MAX_TASKS:
            raise NoFreeCapacityError(f"the backbone already held {MAX_TASKS} tasks")
        classes = tuple(int(c) for c in torch.unique(train_y).tolist())
        if len(classes) < 2:
            raise InvalidInputError(f"a task needs at least 2 classes, the labels hold {classes}")
        if val_y is not None:
            unknown = {int(c) for c in torch.unique(val_y).tolist()} - set(classes)
            if unknown:
                raise InvalidInputError(f"validation labels {sorted(unknown)} are not in train")
        elif len(train_y) < 2:
            raise InvalidInputError("need at least 2 examples to hold out validation data")
        else:
            kept, _ = split_order(len(train_y), HOLD_OUT, config.seed)
            missing = set(classes) - {int(c) for c in train_y[kept].unique().tolist()}
            if missing:
                raise InvalidInputError(
                    f"holding out {HOLD_OUT:.0%} of the examples for validation leaves no "
                    f"training example of class(es) {sorted(missing)}: send more examples "
                    "per class, or a validation set"
                )
        for layer, k in zip(
            self.spec.layers, config.k_per_layer(len(self.spec.layers)), strict=True
        ):
            try:
                resolve_k(k, layer.units)
                if config.structure == "units":  # k must fit the units a task keeps
                    rows = keep_count(config.density, layer.weight_shape[0])
                    resolve_k(k, rows * row_units(layer))
            except ValueError as e:
                extra = (
                    f" (structure 'units' keeps {keep_count(config.density, layer.weight_shape[0])}"
                    f" of {layer.weight_shape[0]} units or channels at density {config.density})"
                    if config.structure == "units"
                    else ""
                )
                raise InvalidInputError(f"{e}{extra}") from None
        reuse.check_room(self.spec, self.owners, config)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Inputs must be N × (backbone input)."""
        check_shape(self.spec, shape)

    def check_inputs(self, x: Any) -> Tensor:
        """Inputs as the backbone takes them (see ``check_inputs``), or InvalidInputError
        naming what was received."""
        return check_inputs(self.spec, x)

    @torch.no_grad()
    def commit_task(self, state: Task) -> TaskRecord:
        """Commit a prepared (or stored) task: it owns the free weights of its mask, which
        take its values, and the free pool is re-initialised; deterministic, so replaying the
        stored tasks in id order rebuilds the backbone bit for bit."""
        task_id, name = state.record.id, state.record.name
        if name in self.tasks:
            raise TaskExistsError(f"task {name!r} already exists; choose another name")
        if task_id != self.next_id:
            raise ValueError(f"task {name!r} has id {task_id}, expected {self.next_id}")
        claimed = [m & f for m, f in zip(state.masks, self.owners.free(), strict=True)]
        for i, (c, v) in enumerate(zip(claimed, state.own_values, strict=True)):
            if int(c.sum()) != v.numel():
                raise ValueError(
                    f"task {name!r} owns {v.numel()} weights of layer {i} but its mask claims "
                    f"{int(c.sum())} free ones: it was learned against another backbone state"
                )
        self.owners.claim(task_id, state.masks)
        for w, c, v in zip(self.backbone.weights, claimed, state.own_values, strict=True):
            w[c] = v
        self.last_id = task_id
        self._reinit_free_pool()
        self.tasks[name] = state
        return state.record

    @property
    def next_id(self) -> int:
        """The id the next committed task gets (deleted tasks keep theirs)."""
        return self.last_id + 1

    def _reinit_free_pool(self) -> None:
        """Every free weight re-initialised as after the last commit (the one implementation
        for commits and deletes): a function of the seed, the last id and the free set, so
        a replay in the same order rebuilds it bit for bit, whatever order deletes came in."""
        self.backbone.reinit_free(self.owners.free(), free_pool_generator(self.seed, self.last_id))

    @torch.no_grad()
    def delete_task(self, name: str) -> TaskDeletion:
        """Stop serving task ``name``: the weights it owns that no remaining task reads go
        back to the free pool (re-initialised); those a remaining task reads stay frozen
        under its id (retired) until their last reader is deleted. Every remaining task
        answers bit for bit as before. UnknownTaskError for a name not served."""
        task = self.task(name)
        task_id = task.record.id
        del self.tasks[name]
        self._nets.pop(name, None)
        self.engine.drop(task)
        self.retired.add(task_id)
        freed = self.owners.release(self.retired, self.reading())
        self._reinit_free_pool()
        return TaskDeletion(
            task_id,
            name,
            tuple(int(f.sum()) for f in freed),
            tuple(int(m.sum()) for m in self.owners.owned_by(task_id)),
            tuple(self.free_capacity()),
        )

    def reading(self) -> list[Tensor]:
        """Per layer, the weights some served task's mask covers (reads or owns)."""
        reading = [torch.zeros(layer.weight_shape, dtype=torch.bool) for layer in self.spec.layers]
        for task in self.tasks.values():
            for r, m in zip(reading, task.masks, strict=True):
                r |= m
        return reading

    # ---- inference ------------------------------------------------------------------------
    def task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none yet"
            raise UnknownTaskError(f"unknown task {brief(name)} (tasks: {known[:400]})") from None

    def net(self, name: str) -> TaskNet:
        """The task's reference network (dense masked forward), built once and cached."""
        if name not in self._nets:
            self._nets[name] = TaskNet(self.spec, self.backbone.weights, self.task(name))
        return self._nets[name]

    def plan(self, name: str) -> Plan:
        """The task's inference plan: compiled on first use (milliseconds to tens of them),
        then cached by the engine; its ``memory`` says the bytes it holds."""
        return self.engine.plan(self.task(name), self.backbone.weights)

    def logits(self, name: str, x: Any) -> Tensor:
        """Per-class scores of task ``name`` for inputs ``x`` (N × backbone input, a numpy
        array or torch tensor: uint8 scaled by 1/255, floats as float32): the engine (which
        runs without autograd: no torch.no_grad() context here, ~2 % of a served Predict)."""
        task = self.task(name)
        return self._logits(task, self.check_inputs(x))

    @torch.no_grad()
    def reference_logits(self, name: str, x: Any) -> Tensor:
        """The same scores by the dense masked forward pass, the engine's reference."""
        net = self.net(name)
        return finite_scores(net(self.check_inputs(x)))

    @overload
    def predict(self, name: str, x: Any) -> Tensor: ...
    @overload
    def predict(self, name: None, x: Any) -> TaskFreePrediction: ...
    def predict(self, name: str | None, x: Any) -> Tensor | TaskFreePrediction:
        """Predicted labels, in the task's own label values (inputs as ``logits`` takes them);
        without a task name, task-free: ``infer_task(x)``."""
        if name is None:
            return self.infer_task(x)
        classes = torch.tensor(self.task(name).classes, dtype=torch.int64)
        return classes[self.logits(name, x).argmax(1)]

    def infer_task(self, x: Any) -> TaskFreePrediction:
        """Task-free inference: per example, which committed task ``x`` belongs to, its label
        in that task's values and a confidence (see ``sparse_engine.taskfree``).

        Batched: the inputs are checked once; one matrix product scores every task's
        identity model for the whole batch; then the engine runs each task's plan once, on
        the examples it won. Under the entropy rule (some task stored without an identity
        model) the engine runs every task's plan on the whole batch.
        """
        tasks = sorted(self.tasks.values(), key=lambda t: t.record.id)
        if not tasks:
            raise UnknownTaskError("no committed task to infer from yet")
        inputs = self.check_inputs(x)
        names = tuple(t.name for t in tasks)
        n = len(inputs)
        labels = torch.zeros(n, dtype=torch.int64)
        confidence = torch.zeros(n, dtype=torch.float32)
        if all(t.identity is not None for t in tasks):
            rule = "identity"
            scores = finite_scores(self.identity_bank(tasks).scores(inputs))
            probs = (scores / TEMPERATURE).softmax(1).float()
            picked = probs.argmax(1)
            for i, task in enumerate(tasks):
                rows = (picked == i).nonzero().reshape(-1)
                if len(rows):
                    logits = self._logits(task, inputs[rows])
                    self._label(task, logits, rows, probs[rows, i], labels, confidence)
        else:
            rule = "entropy"
            all_logits = [self._logits(task, inputs) for task in tasks]
            probs = (entropy_scores(all_logits) / ENTROPY_TEMPERATURE).softmax(1)
            picked = probs.argmax(1)
            for i, task in enumerate(tasks):
                rows = (picked == i).nonzero().reshape(-1)
                self._label(task, all_logits[i][rows], rows, probs[rows, i], labels, confidence)
        return TaskFreePrediction(
            tuple(names[int(i)] for i in picked), labels, confidence, names, probs, rule
        )

    def _logits(self, task: Task, inputs: Tensor) -> Tensor:
        return finite_scores(self.engine.logits(task, self.backbone.weights, inputs))

    @staticmethod
    def _label(
        task: Task, logits: Tensor, rows: Tensor, p_task: Tensor, labels: Tensor, conf: Tensor
    ) -> None:
        """Fill ``labels``/``conf`` at ``rows`` from ``task``'s logits there."""
        p_label, index = logits.softmax(1).max(1)
        labels[rows] = torch.tensor(task.classes, dtype=torch.int64)[index]
        conf[rows] = p_task * p_label

    def identity_bank(self, tasks: list[Task]) -> IdentityBank:
        """The served tasks' identity models stacked, rebuilt when the tasks change."""
        key = tuple(tasks)
        cached = self._bank
        if (
            cached is not None
            and len(cached[0]) == len(key)
            and all(a is b for a, b in zip(cached[0], key, strict=True))
        ):
            return cached[1]
        bank = IdentityBank([t.identity for t in tasks if t.identity is not None])
        self._bank = (key, bank)
        return bank

    def accuracy(self, name: str, data: TaskData | Any) -> float:
        """Fraction of ``data`` (TaskData, or (x, y) arrays or tensors) predicted right."""
        data = as_task(data)
        return float((self.predict(name, data.x) == data.y).float().mean())

    def free_capacity(self) -> list[float]:
        return self.owners.free_capacity()

    def records(self) -> list[TaskRecord]:
        return [t.record for t in sorted(self.tasks.values(), key=lambda t: t.record.id)]
