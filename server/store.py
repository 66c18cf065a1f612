"""The MLflow store: one run and one registered model per task; the server rebuilds from it.

Commit protocol (so SIGKILL at any moment leaves no half-committed task):

1. ``start``: a run tagged ``sparsecl.state=training`` with the task's parameters.
2. ``commit``: metrics, plots and the task's tensors (``task/state.safetensors``, whose
   sha256 goes into a tag) are written first, with the files that make ``task/`` an MLflow
   model (server/pyfunc.py; a task stored before them gains them at a writer's start);
   then one write sets ``sparsecl.state=committed`` — the commit point; then the registry
   entry and the run's FINISHED status follow (both repaired on the next start if the
   server dies between).
3. ``delete`` (DeleteTask): the run first gets ``sparsecl.deleted_after=P`` (P: the last
   task id committed then; alone it changes nothing), then one write sets
   ``sparsecl.state=deleted`` — the delete point; then the registry's version is tagged
   deleted and loses its aliases (repaired on the next start if the server dies between).
   The run, its artifacts and its registered version are kept, so its history stays
   browsable; its id is never reused.
4. ``load`` (on start): committed (and deleted) runs are read back and checked, any other
   run of a task is marked failed; ``server.storecheck.rebuild`` replays them in task-id
   order, each delete right after the commit of its id P (so the free set every later task
   was learned against is rebuilt exactly). A committed run that cannot be served as
   stored (artifact missing or corrupt, tags that contradict the store) is *damaged*:
   quarantined, listed, never served, never marked failed — the other tasks keep serving.

The backbone's spec and seed are experiment tags, written once when the store is created.
An embedded store adopts a moved or copied data dir when it is opened (server/datadir.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sparse_engine import reuse
from sparse_engine.analysis import AnalysisTable
from sparse_engine.backbone import BackboneSpec
from sparse_engine.config import ProgressEvent, TaskConfig
from sparse_engine.state import dumps, loads
from sparse_engine.task import ReuseReport, Task
from sparse_engine.tune import TuneReport, report_tags

from . import plots, pyfunc
from .datadir import DataDirError, relocate
from .faults import crash_point

KIND, TASK, STATE, TASK_ID = "sparsecl.kind", "sparsecl.task", "sparsecl.state", "sparsecl.task_id"
SHA256, ERROR, VERSION = "sparsecl.sha256", "sparsecl.error", "sparsecl.model_version"
MLFLOW_MODEL = "sparsecl.mlflow_model"  # set once the run's task/ is an MLflow model too
STOPPED = "sparsecl.stopped"  # + ".train"/".retrain": why each phase stopped, in order
BACKBONE_TAG, SEED_TAG = "sparsecl.backbone", "sparsecl.seed"
DEVICE_TAG = "sparsecl.device"  # where the task trained (cpu, cuda): provenance only
LEARNED_AS_TAG = "sparsecl.learned_as"  # free | mix | supermask (sparse_engine/capacity.py)
# MLflow 3's UI shows an experiment by its kind: model training, not the GenAI views
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
ANALYSIS_TAG, PARENT_TAG = "sparsecl.analysis", "mlflow.parentRunId"
TRAINING, COMMITTED, FAILED, DELETED = "training", "committed", "failed", "deleted"
DELETED_AFTER = "sparsecl.deleted_after"  # a deleted task's place in the replay: after id P
UNREGISTERED = "sparsecl.unregistered"  # set once a deleted task's registry entry says so
STATE_ARTIFACT = "task/state.safetensors"
TUNE_ARTIFACT = "tune.json"  # a tuned task's search: every (density, k) trial and its cost
# whose weights a task's mask holds (per layer, per earlier task) and the owner map after it
OWNERS_ARTIFACT = "owners.json"
OWNER_MAP_PLOT = "plots/owner_map.png"  # the backbone's owner map over time, after this commit
INTERRUPTED = "interrupted: the server stopped while this task was training"
RESTORE = ": put the file back from a backup, or restore the data dir (sparsecl restore)"
T = TypeVar("T")


class StoreUnavailableError(Exception):
    """The MLflow tracking store could not be reached or refused a write."""


class StoreCorruptError(Exception):
    """The store's contents contradict each other (or this server's configuration)."""


class WriterConflictError(Exception):
    """Another server writes this store now (it took the lease, or committed the task id):
    the task being committed is not."""


@dataclass(frozen=True)
class CommittedTask:
    """A task read back from (or just written to) the store."""

    state: Task
    run_id: str
    model_name: str
    model_version: str
    created_ms: int
    mlflow_model: bool = True  # its task/ is an MLflow model (server/pyfunc.py)
    deleted_after: int = 0  # deleted, replayed right after the commit of this id; 0 = served


@dataclass(frozen=True)
class DamagedTask:
    """A committed task that cannot be served as stored: quarantined, listed, not served.

    ``error`` says why, naming the run and the artifact. ``state`` is set when the task's
    artifact is intact but its tags contradict the store: its weights are still replayed
    (so later tasks that read them stay served), the task itself is not.
    """

    name: str
    task_id: int  # 0 when its id tag is unreadable
    run_id: str  # '' when no run is left
    error: str
    created_ms: int
    state: Task | None = None


@dataclass(frozen=True)
class StoreContents:
    """What ``TaskStore.load`` found: committed tasks in id order, damaged ones, failed ones."""

    committed: list[CommittedTask]
    damaged: list[DamagedTask]
    failed: list[FailedTask]


@dataclass(frozen=True)
class FailedTask:
    """A task whose training failed or was cut off; its name may be used again."""

    name: str
    run_id: str
    error: str
    created_ms: int


def redact(uri: str) -> str:
    """The URI without a password, safe to log or send to clients."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def event_metrics(events: Sequence[ProgressEvent], steps_per_epoch: int) -> list[Metric]:
    """Metrics per training step, per epoch and per phase from a task's progress events."""
    now = int(time.time() * 1000)
    out: list[Metric] = []

    def add(key: str, value: float, step: int) -> None:
        if math.isfinite(value):
            out.append(Metric(key, float(value), now, step))

    ends: dict[str, int] = {}
    for e in events:
        if e.stopped is not None:  # a phase's last epoch (step = the phase's 1, 2, ...)
            n = ends[e.phase] = ends.get(e.phase, 0) + 1
            add(f"{e.phase}/epochs_run", e.extra.get("epochs", math.nan), n)
            add(f"{e.phase}/kept_epoch", e.extra.get("kept_epoch", math.nan), n)
            add(f"{e.phase}/kept_val_accuracy", e.extra.get("kept_accuracy", math.nan), n)
        if e.phase in ("train", "retrain") and e.step > 0:
            step = (e.epoch - 1) * steps_per_epoch + e.step
            add(f"{e.phase}/step_loss", e.loss, step)
            add(f"{e.phase}/step_accuracy", e.accuracy, step)
        elif e.phase in ("train", "retrain"):
            add(f"{e.phase}/epoch_loss", e.loss, e.epoch)
            add(f"{e.phase}/val_accuracy", e.accuracy, e.epoch)
            add(f"{e.phase}/density", e.density, e.epoch)
        elif e.phase == "prune":
            add("prune/val_accuracy", e.accuracy, e.epoch)
            add("prune/density", e.density, e.epoch)
            if "round" in e.extra:  # per pruning round (step = round): target vs kept
                r = int(e.extra["round"])
                add("prune/round_target_density", e.extra.get("target_density", math.nan), r)
                add("prune/round_kept_density", e.density, r)
                add("prune/round_kept_units", e.extra.get("kept_units", math.nan), r)
    return out


@dataclass(frozen=True)
class OwnerCounts:
    """What a task's owner artifacts need beyond the task: the served tasks' names by id and
    the owner map after its commit (per layer, owner id → weights: ``reuse.counts_after``)."""

    names: dict[int, str]
    after: list[dict[int, int]]


def reuse_tags(report: ReuseReport) -> dict[str, str]:
    """A task's reuse as run tags: the choice per layer, the weights read per earlier task id,
    and under similar the ids chosen and every probe score against the baseline."""
    tags = {
        "sparsecl.reuse": ",".join(report.choice),
        "sparsecl.reuse.read_from": json.dumps(report.read_from()),
    }
    if report.baseline is not None:
        tags["sparsecl.reuse.chosen"] = ",".join(map(str, report.chosen))
        tags["sparsecl.reuse.baseline"] = f"{report.baseline:.4f}"
        tags["sparsecl.reuse.scores"] = json.dumps({i: round(a, 4) for i, a in report.scores})
    return tags


def stop_tags(events: Sequence[ProgressEvent]) -> list[RunTag]:
    """Why each training phase stopped, as one tag per phase (fixed | plateau | max_epochs;
    comma-separated for the retraining of several pruning rounds)."""
    reasons: dict[str, list[str]] = {}
    for e in events:
        if e.stopped is not None:
            reasons.setdefault(e.phase, []).append(e.stopped)
    return [RunTag(f"{STOPPED}.{phase}", ",".join(r)) for phase, r in reasons.items()]


class TaskStore:
    """Tasks and the backbone's identity in one MLflow experiment (any tracking URI)."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None, experiment: str) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.experiment = experiment
        self.experiment_id = ""
        self._spec: BackboneSpec | None = None  # the backbone's, once open() has read it
        self.relocated_from: str | None = None  # the artifacts root a moved data dir had
        # raises WriterConflictError unless this server still holds the store (lease.py)
        self.fence: Callable[[], None] | None = None
        if artifact_root is not None and tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri.removeprefix("sqlite:///"))
            try:
                self.relocated_from = relocate(db, artifact_root, experiment)
            except DataDirError as e:
                raise StoreCorruptError(str(e)) from None
        try:  # MLflow opens (and may migrate) the database right here
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except Exception as e:
            raise StoreUnavailableError(
                f"cannot open the MLflow store {redact(tracking_uri)}: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None

    # ---- plumbing -------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (StoreUnavailableError, StoreCorruptError, WriterConflictError):
            raise
        except Exception as e:  # MLflow wraps HTTP, SQL and file errors in many types
            raise StoreUnavailableError(
                f"MLflow store {redact(self.tracking_uri)} failed to {what}: {e}"
            ) from e

    def model_name(self, task: str) -> str:
        """The registered model that shows task ``task`` in the MLflow UI."""
        return f"{self.experiment}.{task}"

    @property
    def spec(self) -> BackboneSpec:
        """The backbone of the opened store (its overall density and capacity formulas)."""
        if self._spec is None:
            raise StoreUnavailableError("the store is not open yet (call open() first)")
        return self._spec

    # ---- backbone -------------------------------------------------------------------------
    def open(
        self, backbone: str | None, seed: int, default: str, create: bool = True
    ) -> tuple[str, int]:
        """Create or open the experiment; returns the backbone (spec, seed) to run.

        A new store records ``backbone`` (or ``default``); an existing one keeps its own,
        and asking for a different backbone raises StoreCorruptError. Without ``create``
        (``sparsecl store check``) a missing experiment or backbone raises
        StoreUnavailableError instead.
        """

        def run() -> tuple[str, int]:
            exp = self.client.get_experiment_by_name(self.experiment)
            if not create and (exp is None or BACKBONE_TAG not in exp.tags):
                raise StoreUnavailableError(
                    f"{redact(self.tracking_uri)} holds no sparsecl experiment "
                    f"{self.experiment!r} (nothing to check)"
                )
            if self.artifact_root is not None:
                self.artifact_root.mkdir(parents=True, exist_ok=True)
            if exp is None:
                location = self.artifact_root.as_uri() if self.artifact_root else None
                self.experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=location
                )
                tags: dict[str, str] = {}
            else:
                self.experiment_id = exp.experiment_id
                tags = dict(exp.tags)
            if create and tags.get(KIND_TAG) != MODEL_TRAINING:
                self.client.set_experiment_tag(self.experiment_id, KIND_TAG, MODEL_TRAINING)
            if BACKBONE_TAG in tags:
                stored, stored_seed = tags[BACKBONE_TAG], int(tags.get(SEED_TAG, "0"))
                self._spec = BackboneSpec.parse(stored)
                if backbone is not None and backbone != stored:
                    raise StoreCorruptError(
                        f"the store {redact(self.tracking_uri)} (experiment {self.experiment!r})"
                        f" holds backbone {stored}; start with --backbone {stored}, or use "
                        "another --data-dir / --tracking-uri for a new backbone"
                    )
                return stored, stored_seed
            spec = backbone or default
            self._spec = BackboneSpec.parse(spec)
            self.client.set_experiment_tag(self.experiment_id, SEED_TAG, str(seed))
            self.client.set_experiment_tag(self.experiment_id, BACKBONE_TAG, spec)
            return spec, seed

        return self._call("open the experiment", run)

    def describe_backbone(
        self, spec: str, seed: int, tasks: int, free_capacity: float, last_run: str | None = None
    ) -> None:
        """Keep the registered model '<experiment>.backbone' current (best effort); with the
        ``last_run`` committed, its tag ``owner_map`` points at that run's plot of the
        owner map over time."""
        name = f"{self.experiment}.backbone"
        tags = {
            "spec": spec,
            "seed": str(seed),
            "tasks": str(tasks),
            "free_capacity": f"{free_capacity:.4f}",
            "experiment_id": self.experiment_id,
        }
        if last_run is not None:
            tags["owner_map"] = f"runs:/{last_run}/{OWNER_MAP_PLOT}"

        def run() -> None:
            try:
                self.client.create_registered_model(
                    name,
                    description=f"sparsecl backbone {spec} (seed {seed}): every task of "
                    f"experiment {self.experiment!r} is a sparse subnetwork of it",
                )
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            for key, value in tags.items():
                self.client.set_registered_model_tag(name, key, value)

        self._call("describe the backbone", run)

    # ---- tasks ----------------------------------------------------------------------------
    def start(
        self,
        name: str,
        task_id: int,
        config: TaskConfig,
        spec: str,
        examples: dict[str, int],
        device: str | None = None,
    ) -> tuple[str, int]:
        """Open the run of a task about to be trained (on ``device``, tagged when given);
        returns (run id, start time in ms)."""
        tags = {KIND: "task", TASK: name, STATE: TRAINING, TASK_ID: str(task_id)}
        if device is not None:
            tags[DEVICE_TAG] = device

        def run() -> tuple[str, int]:
            r = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            params.update(backbone=spec, task_id=task_id, **examples)
            self.client.log_batch(
                r.info.run_id, params=[Param(k, str(v)) for k, v in params.items()]
            )
            return r.info.run_id, int(r.info.start_time)

        return self._call("start a run", run)

    def commit(
        self,
        run_id: str,
        state: Task,
        events: Sequence[ProgressEvent],
        steps_per_epoch: int,
        created_ms: int,
        weights: bytes | None = None,
        tune: TuneReport | None = None,
        owners: OwnerCounts | None = None,
    ) -> CommittedTask:
        """Write everything of the task, then mark it committed (see the module docstring).

        ``weights`` (``sparse_engine.standalone.dumps_weights``: the backbone values the
        task's mask reads) make the run's ``task/`` an MLflow model before the commit point;
        without them the next start adds it (``log_model``). A tuned task's ``tune`` report
        becomes ``sparsecl.tune.*`` tags (the choice, its cost) and the artifact tune.json
        (every trial). ``owners`` (the names of the served tasks and the owner map after
        the commit) add owners.json, plots/owners.png (whose weights the mask holds, per
        layer) and plots/owner_map.png (the backbone's owner map over time), and the
        ``sparsecl.reuse*`` tags."""
        record = state.record
        blob = dumps(state)
        metrics = event_metrics(events, steps_per_epoch)
        now = int(time.time() * 1000)
        summary: dict[str, float] = {
            "val_accuracy": record.val_accuracy,
            "weights_owned": record.weights_owned,
            "weights_read": record.weights_read,
            "seconds": record.seconds,
            "state_bytes": len(blob),
            "density": self.spec.overall(record.density),
            "capacity_used": 1.0 - self.spec.overall(record.free_capacity),
        }
        for i, (d, f) in enumerate(zip(record.density, record.free_capacity, strict=True)):
            summary[f"density/layer{i}"] = d
            summary[f"free_capacity/layer{i}"] = f
        metrics += [Metric(k, float(v), now, 0) for k, v in summary.items()]

        def write() -> None:
            tags = [*stop_tags(events), RunTag(LEARNED_AS_TAG, record.learned_as)]
            if record.reuse is not None:
                tags += [RunTag(k, v) for k, v in reuse_tags(record.reuse).items()]
            if tune is not None:
                tags += [RunTag(k, str(v)) for k, v in report_tags(tune).items()]
            self.client.log_batch(run_id, tags=tags)
            for start in range(0, len(metrics), 900):
                self.client.log_batch(run_id, metrics=metrics[start : start + 900])
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                (root / "task").mkdir()
                (root / "plots").mkdir()
                (root / STATE_ARTIFACT).write_bytes(blob)
                if tune is not None:
                    (root / TUNE_ARTIFACT).write_text(tune.to_json())
                (root / "task" / "record.json").write_text(
                    json.dumps(dataclasses.asdict(record), indent=2, default=str)
                )
                plots.training_curve(events, record.name, root / "plots" / "training.png")
                plots.density_per_layer(record, root / "plots" / "density.png")
                if owners is not None and record.reuse is not None:
                    table = reuse.table(state, owners.names, owners.after)
                    (root / OWNERS_ARTIFACT).write_text(json.dumps(table, indent=2))
                    plots.mask_owners(record, owners.names, root / "plots" / "owners.png")
                    sizes = [layer.numel for layer in self.spec.layers]
                    names = {**owners.names, record.id: record.name}
                    plots.owner_map(owners.after, sizes, names, root / OWNER_MAP_PLOT)
                if weights is not None:
                    self._model_files(root / "task", state, weights)
                self.client.log_artifacts(run_id, str(root))
            crash_point("artifacts-uploaded", record.name)
            self.client.set_tag(run_id, SHA256, hashlib.sha256(blob).hexdigest())
            if weights is not None:
                self.client.set_tag(run_id, MLFLOW_MODEL, "task")
            crash_point("artifacts-written", record.name)
            self._check_writer(run_id, record.id)
            self.client.set_tag(run_id, STATE, COMMITTED)  # the commit point
            crash_point("committed", record.name)

        self._call("store the task", write)
        version = self._register(run_id, state)
        self._finish(run_id)
        name = self.model_name(record.name)
        return CommittedTask(state, run_id, name, version, created_ms, weights is not None)

    def _model_files(self, task_dir: Path, state: Task, weights: bytes) -> None:
        """Add the MLflow model's files (server/pyfunc.py) to a task's ``task/`` directory."""
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model"
            pyfunc.save(model, self.spec, len(state.classes), weights)
            shutil.copytree(model, task_dir, dirs_exist_ok=True)

    def log_model(self, run_id: str, state: Task, weights: bytes) -> None:
        """Make a committed task's ``task/`` an MLflow model (a task stored before MLflow
        models were written): adds files next to its state, which it never touches, then
        tags the run; idempotent. Its registered model version already points at task/."""

        def write() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                task_dir = Path(tmp) / "task"
                task_dir.mkdir()
                self._model_files(task_dir, state, weights)
                self.client.log_artifacts(run_id, str(task_dir), "task")
            self.client.set_tag(run_id, MLFLOW_MODEL, "task")

        self._call("write the task's MLflow model", write)

    def _check_writer(self, run_id: str, task_id: int) -> None:
        """Right before a commit point: raise WriterConflictError if this server lost the
        store's lease, or if another run committed ``task_id`` meanwhile (two writers in the
        lease's race window): the owner map keeps one task per id."""
        if self.fence is not None:
            self.fence()
        taken = self.committed_runs().get(task_id)
        if taken is not None and taken.info.run_id != run_id:
            raise WriterConflictError(
                f"task id {task_id} was committed meanwhile by run {taken.info.run_id} "
                f"({_name(taken)!r}): another sparsecl server writes this store; "
                "this task is not committed"
            )

    def _register(self, run_id: str, state: Task) -> str:
        """One registered model per task, version tagged for the UI; '' if the registry failed."""
        record = state.record
        name = self.model_name(record.name)
        spec = self.client.get_experiment(self.experiment_id).tags.get(BACKBONE_TAG, "")
        tags = {
            "backbone": spec,
            "task_id": str(record.id),
            "classes": ",".join(map(str, record.classes)),
            "density": f"{self.spec.overall(record.density):.4f}",
            "accuracy": f"{record.val_accuracy:.4f}",
            "capacity_used": f"{1 - self.spec.overall(record.free_capacity):.4f}",
            "weights_owned": str(record.weights_owned),
            "learned_as": record.learned_as,
            "state": COMMITTED,
        }
        try:
            try:
                self.client.create_registered_model(
                    name,
                    tags=tags,
                    description=f"sparsecl task {record.name!r}: a sparse subnetwork of the "
                    "backbone, an MLflow pyfunc model (the run's task/: mask, own weights, "
                    "head, and the backbone values its mask reads)",
                )
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                for key, value in tags.items():
                    self.client.set_registered_model_tag(name, key, value)
            crash_point("registered", record.name)
            found = self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
            if found:  # registered before a crash cut off the tag below
                mv = found[0]
            else:
                source = f"{self.client.get_run(run_id).info.artifact_uri}/task"
                mv = self.client.create_model_version(name, source, run_id=run_id, tags=tags)
            crash_point("model-version", record.name)
            self.client.set_tag(run_id, VERSION, str(mv.version))
            return str(mv.version)
        except Exception:  # the commit already happened; the next start repairs the registry
            return ""

    def _finish(self, run_id: str) -> None:
        with contextlib.suppress(Exception):  # repaired on the next start
            self.client.set_terminated(run_id, "FINISHED")

    def delete(self, task: CommittedTask, position: int) -> None:
        """Mark a committed task deleted (see the module docstring): ``position`` is the last
        task id committed now, after which a replay deletes it. StoreUnavailableError (or
        WriterConflictError) before the delete point changes nothing."""
        run_id, name = task.run_id, task.state.name

        def write() -> None:
            self.client.set_tag(run_id, DELETED_AFTER, str(position))
            crash_point("delete-marked", name)
            if self.fence is not None:
                self.fence()
            self.client.set_tag(run_id, STATE, DELETED)  # the delete point
            crash_point("deleted", name)

        self._call("delete the task", write)
        self._unregister(run_id, task.model_name, task.model_version)

    def _unregister(self, run_id: str, model_name: str, version: str) -> None:
        """Tag a deleted task's registered version (and its model, unless a later version
        serves the name again) deleted and remove its aliases; best effort, the next start
        repairs it."""
        try:
            if version:
                mv = self.client.get_model_version(model_name, version)
                for alias in mv.aliases:
                    self.client.delete_registered_model_alias(model_name, alias)
                self.client.set_model_version_tag(model_name, version, "state", DELETED)
                versions = self.client.search_model_versions(f"name='{model_name}'")
                if max(int(v.version) for v in versions) == int(version):
                    self.client.set_registered_model_tag(model_name, "state", DELETED)
            crash_point("unregistered", model_name.removeprefix(f"{self.experiment}."))
            self.client.set_tag(run_id, UNREGISTERED, "1")
        except Exception:  # the delete already happened; the next start repairs the registry
            pass

    def fail(self, run_id: str, error: str) -> None:
        """Mark a task's run failed (best effort: ``load`` does it on the next start anyway)."""
        try:
            self.client.set_tag(run_id, ERROR, error[:4000])
            self.client.set_tag(run_id, STATE, FAILED)
            self.client.set_terminated(run_id, "FAILED")
        except Exception:
            pass

    def log_analysis(
        self,
        table: AnalysisTable,
        params: dict[str, str],
        plot: Callable[[Path], None],
        task_run_id: str,
    ) -> str:
        """One FINISHED run per analysis, nested under the task's run (kind ``analysis``,
        which ``load`` never reads as a task): parameters, summary metrics, one metric
        series per column (step = row), the table as JSON and the plot; returns its id."""
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in table.summary if math.isfinite(v)]
        metrics.append(Metric("examples", float(table.examples), now, 0))
        for step, (_, values) in enumerate(table.rows):
            metrics += [
                Metric(column, float(v), now, step)
                for column, v in zip(table.columns, values, strict=True)
                if math.isfinite(v)
            ]
        tags = {KIND: "analysis", TASK: table.task, ANALYSIS_TAG: table.analysis}
        if task_run_id:
            tags[PARENT_TAG] = task_run_id

        def write() -> str:
            r = self.client.create_run(
                self.experiment_id, run_name=f"{table.task}.{table.analysis}", tags=tags
            )
            run_id = r.info.run_id
            try:
                self.client.log_batch(
                    run_id,
                    params=[Param(k, v[:6000]) for k, v in params.items()],
                    metrics=metrics[:900],
                )
                for start in range(900, len(metrics), 900):
                    self.client.log_batch(run_id, metrics=metrics[start : start + 900])
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp) / "analysis"
                    root.mkdir()
                    (root / "table.json").write_text(
                        json.dumps(dataclasses.asdict(table), indent=2)
                    )
                    plot(root / f"{table.analysis}.png")
                    self.client.log_artifacts(run_id, str(root), "analysis")
            except Exception:
                self.fail(run_id, "the analysis could not be stored")
                raise
            self.client.set_terminated(run_id, "FINISHED")
            return run_id

        return self._call("store the analysis", write)

    def _runs(self, where: str = "") -> list[Any]:
        """Every task run (and ``where``, an MLflow filter clause), page after page."""
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{KIND}` = 'task'" + (f" and {where}" if where else ""),
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def load(self, repair: bool = True) -> StoreContents:
        """Every task run, sorted out: committed (checked, id order), damaged, failed.

        A task run is *committed* when its state tag says so or when it carries the model
        version tag (written only after the commit point). Committed runs whose artifact is
        missing or corrupt, whose tags contradict each other, or whose task id is taken twice
        or skipped are *damaged* (see ``DamagedTask``), never fatal and never marked failed.
        With ``repair`` (the server's start, not ``sparsecl store check``) a run cut off
        before its commit is marked failed and a committed run's registry entry and FINISHED
        status are completed.
        """

        def run() -> StoreContents:
            claims: dict[int, list[Any]] = {}
            damaged: list[DamagedTask] = []
            failed: list[FailedTask] = []
            for r in self._runs():
                tags = r.data.tags
                if tags.get(STATE) not in (COMMITTED, DELETED) and VERSION not in tags:
                    error = tags.get(ERROR, INTERRUPTED)
                    if repair and (tags.get(STATE) != FAILED or r.info.status == "RUNNING"):
                        self.fail(r.info.run_id, error)
                    failed.append(
                        FailedTask(_name(r), r.info.run_id, error, int(r.info.start_time))
                    )
                    continue
                task_id = tags.get(TASK_ID, "")
                if not task_id.isdigit() or int(task_id) < 1:
                    damaged.append(
                        _damaged(r, 0, f"its tag {TASK_ID}={task_id!r} is not a task id 1, 2, …")
                    )
                    continue
                claims.setdefault(int(task_id), []).append(r)
            top = max([*claims, 0])
            deleted = self._deleted_runs() if len(claims) < top else {}
            committed: list[CommittedTask] = []
            for task_id in range(1, top + 1):
                runs = claims.get(task_id, [])
                if not runs:
                    damaged.append(self._missing(task_id, deleted.get(task_id)))
                elif len(runs) > 1:
                    ids = ", ".join(r.info.run_id for r in runs)
                    why = (
                        f"runs {ids} all claim task id {task_id}: delete the wrong run(s) in "
                        "MLflow, or restore the store from a backup"
                    )
                    damaged += [_damaged(r, task_id, why) for r in runs]
                else:
                    task = self._read(runs[0], task_id, repair)
                    if isinstance(task, CommittedTask):
                        committed.append(task)
                    else:
                        damaged.append(task)
            taken = {t.state.name for t in committed if not t.deleted_after}
            taken |= {d.name for d in damaged}
            latest: dict[str, FailedTask] = {}
            for f in sorted(failed, key=lambda f: f.created_ms):
                if f.name not in taken:
                    latest[f.name] = f
            return StoreContents(committed, damaged, list(latest.values()))

        return self._call("load the tasks", run)

    def committed_runs(self) -> dict[int, Any]:
        """The runs of committed (and since deleted) tasks by task id, from one search (no
        artifact is read): what an inference replica polls. An id two runs claim is left
        out (it is damaged)."""

        def run() -> dict[int, Any]:
            claims: dict[int, list[Any]] = {}
            for r in self._runs():
                task_id = r.data.tags.get(TASK_ID, "")
                if r.data.tags.get(STATE) in (COMMITTED, DELETED) and task_id.isdigit():
                    claims.setdefault(int(task_id), []).append(r)
            return {i: runs[0] for i, runs in claims.items() if len(runs) == 1}

        return self._call("list the committed tasks", run)

    def read(self, r: Any, task_id: int) -> CommittedTask | DamagedTask:
        """A committed run's task (from ``committed_runs``), checked as a start checks it;
        repairs nothing (a replica never writes)."""
        return self._call("read a task", lambda: self._read(r, task_id, repair=False))

    @staticmethod
    def deleted_after(r: Any) -> int:
        """A deleted task run's place in the replay (after this id); 0 for a served one."""
        tags = r.data.tags
        position = tags.get(DELETED_AFTER, "")
        return int(position) if tags.get(STATE) == DELETED and position.isdigit() else 0

    @staticmethod
    def version_of(r: Any) -> str:
        """The registered model version a task run is tagged with ('' before it is)."""
        return str(r.data.tags.get(VERSION, "")) if r is not None else ""

    def _deleted_runs(self) -> dict[int, Any]:
        """Deleted task runs by task id: what a gap in the ids may have been."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{KIND}` = 'task'",
            run_view_type=ViewType.DELETED_ONLY,
            max_results=1000,
        )
        return {
            int(r.data.tags[TASK_ID]): r
            for r in runs
            if r.data.tags.get(TASK_ID, "").isdigit()
            and (r.data.tags.get(STATE) == COMMITTED or VERSION in r.data.tags)
        }

    def _missing(self, task_id: int, deleted: Any) -> DamagedTask:
        """The damaged entry of a task id no committed run holds."""
        if deleted is not None:
            return _damaged(
                deleted,
                task_id,
                "its run was deleted in MLflow; restore the run (MLflow UI, or "
                "MlflowClient().restore_run) or the data dir from a backup",
            )
        return DamagedTask(
            f"(missing task {task_id})",
            task_id,
            "",
            f"no committed run holds task id {task_id} (ids must run 1, 2, … without gaps): "
            "restore the store from a backup",
            0,
        )

    def artifact_path(self, r: Any) -> str:
        """Where the run's task state lives: a local path (embedded store) or a URI."""
        uri = f"{r.info.artifact_uri}/{STATE_ARTIFACT}"
        parts = urlsplit(uri)
        return unquote(parts.path) if parts.scheme == "file" else uri

    def _read(self, r: Any, task_id: int, repair: bool) -> CommittedTask | DamagedTask:
        """A committed run's task, or why it is damaged (artifact or tags)."""
        run_id, tags, path = r.info.run_id, r.data.tags, self.artifact_path(r)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                blob = Path(
                    self.client.download_artifacts(run_id, STATE_ARTIFACT, tmp)
                ).read_bytes()
            except Exception:  # missing (damaged), or the store failed (unavailable): ask it
                listed = {a.path for a in self.client.list_artifacts(run_id, "task")}
                if STATE_ARTIFACT in listed:
                    raise
                return _damaged(r, task_id, f"its artifact {path} is missing{RESTORE}")
        if hashlib.sha256(blob).hexdigest() != tags.get(SHA256):
            return _damaged(
                r, task_id, f"its artifact {path} does not match its sha256 tag{RESTORE}"
            )
        try:
            state = loads(blob)
        except Exception as e:  # the bytes are the committed ones, yet unreadable
            return _damaged(r, task_id, f"its artifact {path} cannot be read ({e}){RESTORE}")
        if (state.record.id, state.name) != (task_id, tags.get(TASK)):
            return _damaged(
                r,
                task_id,
                f"its artifact {path} holds task {state.name!r} id {state.record.id}, its "
                f"tags say task {tags.get(TASK)!r} id {task_id}",
            )
        deleted_after = self.deleted_after(r)
        if tags.get(STATE) == DELETED and deleted_after < task_id:
            why = f"its tag {DELETED_AFTER}={tags.get(DELETED_AFTER)!r} is not an id ≥ {task_id}"
            return dataclasses.replace(_damaged(r, task_id, why), state=state)
        if tags.get(STATE) not in (COMMITTED, DELETED):
            reason = (
                f"its tag {STATE}={tags.get(STATE)!r} contradicts its tag {VERSION} (written "
                f"only after the commit point): set {STATE}=committed again to serve it"
            )
            return dataclasses.replace(_damaged(r, task_id, reason), state=state)
        version = tags.get(VERSION, "")
        if repair:
            if not deleted_after:
                version = version or self._register(run_id, state)
            elif UNREGISTERED not in tags:
                self._unregister(run_id, self.model_name(state.name), version)
            if r.info.status != "FINISHED":
                self._finish(run_id)
        return CommittedTask(
            state,
            run_id,
            self.model_name(state.name),
            version,
            int(r.info.start_time),
            MLFLOW_MODEL in tags,
            deleted_after,
        )


def _name(r: Any) -> str:
    return str(r.data.tags.get(TASK, r.info.run_name))


def _damaged(r: Any, task_id: int, why: str) -> DamagedTask:
    """A damaged task whose reason names its run and task."""
    return DamagedTask(
        _name(r),
        task_id,
        r.info.run_id,
        f"run {r.info.run_id} of task {_name(r)!r} (id {task_id}): {why}",
        int(r.info.start_time),
    )
