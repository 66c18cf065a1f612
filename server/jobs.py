"""The training queue: one task trains at a time, in a worker thread, while the server serves.

Each job reports to its listener (the AddTask call that submitted it): progress events,
then ``Done`` with the committed task or ``Failed`` with the error. A job is stored in
MLflow first and committed to the in-memory model only after the store's commit point,
so memory never holds a task that a restart would not bring back.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sparse_engine import reuse
from sparse_engine.config import HOLD_OUT, ProgressEvent, TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.model import SparseCL
from sparse_engine.standalone import dumps_weights, read_values
from sparse_engine.tune import Search

from .errors import CancelledError, LimitExceededError, QueueFullError, TrainingTimeError
from .faults import crash_point
from .store import CommittedTask, OwnerCounts, TaskStore
from .uploads import Examples, Reservation

log = logging.getLogger("sparsecl.server")


@dataclass(frozen=True)
class Done:
    """The job's task is committed (stored, then live)."""

    task: CommittedTask


@dataclass(frozen=True)
class Failed:
    """The job failed; nothing of it was committed."""

    error: Exception


JobEvent = ProgressEvent | Done | Failed


@dataclass
class Job:
    """One task to learn: its data, hyper-parameters, state and listener (mutable, internal).

    The examples stay as uploaded (uint8 stays uint8) until the job trains; they and the
    bytes they hold in the server's buffer pool are let go once the job is done."""

    name: str
    config: TaskConfig
    train: Examples | None
    val: Examples | None
    listener: Callable[[JobEvent], None]
    reservation: Reservation | None = None
    tune: Search | None = None  # tune (density, k) first; None = no
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    state: str = "queued"  # queued | training | committed | failed
    error: str = ""
    run_id: str = ""
    cancelled: str = ""  # why the job must stop before its commit; "" = keep going
    train_examples: int = field(init=False, default=0)  # kept once the examples are let go
    val_examples: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.train_examples = len(self.train) if self.train is not None else 0
        self.val_examples = len(self.val) if self.val is not None else 0

    @property
    def steps_per_epoch(self) -> int:
        n = self.train_examples
        if not self.val_examples:  # the model holds out 10 % for validation
            n -= max(1, round(HOLD_OUT * n))
        return math.ceil(n / self.config.batch_size)

    def data(self) -> tuple[TaskData, TaskData | None]:
        """The examples as float32 TaskData (converted now, in the trainer's thread)."""
        if self.train is None:
            raise CancelledError(f"task {self.name!r} no longer holds its examples")
        return self.train.task_data(), self.val.task_data() if self.val is not None else None

    def let_go(self) -> None:
        """Drop the examples and their bytes in the buffer pool (the job is done)."""
        self.train = self.val = None
        if self.reservation is not None:
            self.reservation.release()


class Slot:
    """A place in the training queue held by an upload in flight, so that uploads count
    against ``max_queue`` before their first chunk is accepted; released exactly once."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.open = True

    def release(self) -> None:
        with self.trainer.lock:
            if self.open:
                self.open = False
                self.trainer.uploading -= 1


class Trainer:
    """A FIFO of jobs and the one worker thread that learns, stores and commits them."""

    def __init__(
        self,
        model: SparseCL,
        store: TaskStore,
        lock: threading.RLock,
        max_queue: int,
        on_commit: Callable[[CommittedTask], None],
        max_train_seconds: float = math.inf,
    ) -> None:
        self.model = model
        self.store = store
        self.lock = lock  # held while the model's task set changes
        self.max_queue = max_queue
        self.on_commit = on_commit
        self.jobs: dict[str, Job] = {}  # queued, training and failed jobs by name
        self.finished: Counter[str] = Counter()  # jobs of this run ended, by final state
        self.uploading = 0  # uploads in flight holding a queue slot
        self.max_train_seconds = max_train_seconds
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="sparsecl-trainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def active(self) -> list[Job]:
        with self.lock:
            return [j for j in self.jobs.values() if j.state in ("queued", "training")]

    def snapshot(self) -> list[Job]:
        """Queued, training and failed jobs, oldest first."""
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: j.created_ms)

    def open_slot(self) -> Slot:
        """Hold a queue place for an upload about to arrive; QueueFullError when none is left."""
        if self._stopping.is_set():
            raise CancelledError("the server is shutting down; no new tasks are accepted")
        with self.lock:
            busy = len(self.active()) + self.uploading
            if busy >= self.max_queue:
                raise QueueFullError(
                    f"the training queue is full ({busy} tasks queued, training or uploading; "
                    f"--max-queue {self.max_queue}); retry later"
                )
            self.uploading += 1
            return Slot(self)

    def submit(self, job: Job, slot: Slot | None = None) -> int:
        """Queue ``job`` in ``slot`` (or a new one); returns how many jobs are ahead of it."""
        with self.lock:
            slot = slot or self.open_slot()
            slot.release()
            if self._stopping.is_set():
                raise CancelledError("the server is shutting down; no new tasks are accepted")
            ahead = len(self.active())
            self.jobs[job.name] = job
            self._queue.put(job)
            return ahead

    def cancel(self, job: Job, reason: str) -> None:
        """Stop ``job`` before its commit: at once if queued, else at its next step."""
        with self.lock:
            if job.state not in ("queued", "training"):
                return
            job.cancelled = reason
            if job.state == "queued":
                job.state, job.error = "failed", reason
                self.finished["failed"] += 1
                job.let_go()
        log.info("task %r cancelled: %s", job.name, reason)

    def stop(self) -> None:
        """Stop: the running job is cancelled at its next progress step, queued ones fail."""
        self._stopping.set()
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker to finish (at once if it never started: an inference replica)."""
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        stopped = False
        while not stopped or not self._queue.empty():  # then jobs queued after the sentinel
            job = self._queue.get()
            if job is None:
                stopped = True
            elif self._stopping.is_set():
                self._fail(job, CancelledError("the server shut down before this task trained"))
            else:
                self._learn(job)

    def _learn(self, job: Job) -> None:
        with self.lock:
            if job.cancelled:  # cancelled while queued: already failed
                return
            job.state = "training"
        events: list[ProgressEvent] = []
        started = time.monotonic()

        def progress(event: ProgressEvent) -> None:
            if self._stopping.is_set():
                raise CancelledError("the server shut down while this task was training")
            if job.cancelled:
                raise CancelledError(job.cancelled)
            if time.monotonic() - started > self.max_train_seconds:
                raise TrainingTimeError(
                    f"task {job.name!r} trained past the server's --max-train-seconds of "
                    f"{self.max_train_seconds:g} and was stopped; nothing was committed: "
                    "send fewer examples or epochs"
                )
            if not events or events[-1].phase != event.phase:
                crash_point(event.phase, job.name)
            events.append(event)
            job.listener(event)

        try:
            task_id = self.model.next_id
            examples = {"train_examples": job.train_examples, "val_examples": job.val_examples}
            job.run_id, created = self.store.start(
                job.name,
                task_id,
                job.config,
                str(self.model.spec),
                examples,
                device=self.model.device.type,
            )
            train, val = job.data()
            report = None
            if job.tune is None:
                state = self.model.prepare_task(job.name, train, val, job.config, progress)
            else:
                state, report = self.model.prepare_tuned(
                    job.name,
                    train,
                    val,
                    job.config,
                    progress,
                    candidates=job.tune.candidates,
                    tolerance=job.tune.tolerance,
                )
            del train, val
            if job.cancelled:  # the last chance: after the store's commit the task is kept
                raise CancelledError(job.cancelled)
            weights = dumps_weights(self.model.spec, read_values(self.model, state))
            names = {t.record.id: t.name for t in self.model.tasks.values()}
            owners = OwnerCounts(names, reuse.counts_after(self.model.owners, state))
            stored = self.store.commit(
                job.run_id, state, events, job.steps_per_epoch, created, weights, report, owners
            )
            with self.lock:
                self.model.commit_task(state)
                self.on_commit(stored)
                job.state = "committed"
                self.finished["committed"] += 1
                del self.jobs[job.name]
        except Exception as e:
            self._fail(job, e)
            return
        finally:
            job.let_go()
        try:  # the plan now, before the client hears Done, not in the first Predict
            self.model.plan(job.name)
        except Exception:  # the task is committed all the same: the first Predict compiles it
            log.exception("could not compile the inference plan of task %r", job.name)
        record = state.record
        job.listener(self.model.commit_event(record))
        job.listener(Done(stored))
        log.info(
            "committed task %r (id %d, val accuracy %.4f)", job.name, record.id, record.val_accuracy
        )

    def _fail(self, job: Job, error: Exception) -> None:
        job.let_go()
        if isinstance(error, MemoryError):
            error = LimitExceededError(
                f"task {job.name!r} ran out of memory while training; nothing was committed: "
                "send fewer examples or a smaller batch_size"
            )
        message = str(error) or type(error).__name__
        if not isinstance(error, CancelledError):
            log.error("task %r failed:\n%s", job.name, "".join(traceback.format_exception(error)))
        try:  # store first: whoever sees the job failed finds its run failed too
            if job.run_id:
                self.store.fail(job.run_id, message)
        finally:
            with self.lock:
                job.state, job.error = "failed", message
                self.finished["failed"] += 1
        job.listener(Failed(error))
