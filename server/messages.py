"""Conversions between sparse_engine's records/configs and the API's messages."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sparse_engine.analysis import AnalysisTable
from sparse_engine.config import AUTO, ProgressEvent, TaskConfig
from sparse_engine.errors import InvalidInputError
from sparse_engine.owners import MAX_TASKS
from sparse_engine.task import ReuseReport, TaskRecord
from sparse_engine.tune import (
    CANDIDATES,
    TOLERANCE,
    Search,
    TuneReport,
    check_candidates,
    trial_configs,
)
from sparsecl import hyper
from sparsecl.v1 import sparsecl_pb2 as pb

if TYPE_CHECKING:
    from .dataplane import Backbone


def task_config(hp: pb.HyperParameters) -> TaskConfig:
    """A TaskConfig from the message: unset fields keep TaskConfig's defaults.

    Raises InvalidInputError (from TaskConfig) when a value is out of range.
    """
    return TaskConfig(**hyper.values(hp))


def tune_search(header: pb.AddTaskHeader, config: TaskConfig) -> Search:
    """A header's tune request (unset: tune.CANDIDATES, tune.TOLERANCE); InvalidInputError,
    before any upload, for a tolerance outside [0, 1], a count of pairs outside 1 to
    MAX_TRIALS, or a pair that is not a valid density and k for ``config``."""
    t = header.tune
    pairs = tuple(
        (p.density, hyper.values(pb.HyperParameters(k=p.k)).get("k", AUTO)) for p in t.pairs
    )
    tolerance = t.tolerance if t.HasField("tolerance") else TOLERANCE
    candidates = check_candidates(pairs or CANDIDATES, tolerance)
    trial_configs(config, candidates)
    return Search(candidates, tolerance)


def hyper_parameters(config: TaskConfig) -> pb.HyperParameters:
    """Every field of ``config`` as a message."""
    return hyper.message(dataclasses.asdict(config))


def task_info(
    record: TaskRecord,
    config: TaskConfig,
    *,
    run_id: str = "",
    model_name: str = "",
    model_version: str = "",
    created_ms: int = 0,
    plan_bytes: int = 0,
) -> pb.TaskInfo:
    """A committed task's record as a message."""
    return pb.TaskInfo(
        name=record.name,
        state=pb.TASK_STATE_COMMITTED,
        id=record.id,
        classes=list(record.classes),
        density=list(record.density),
        weights_owned=record.weights_owned,
        weights_read=record.weights_read,
        val_accuracy=record.val_accuracy,
        free_capacity=list(record.free_capacity),
        mlflow_run_id=run_id,
        model_name=model_name,
        model_version=model_version,
        created_unix_ms=created_ms,
        seconds=record.seconds,
        hyper_parameters=hyper_parameters(config),
        plan_bytes=plan_bytes,
        reuse=task_reuse(record.reuse) if record.reuse is not None else None,
        learned_as=record.learned_as,
    )


def task_reuse(report: ReuseReport) -> pb.TaskReuse:
    """A task's reuse report as the message: its mask's owners as weights per earlier task
    and layer, and the free weights it claimed per layer."""
    by_owner = report.by_owner()
    return pb.TaskReuse(
        choice=list(report.choice),
        chosen=list(report.chosen),
        baseline=report.baseline,
        scores=[pb.ReuseScore(task_id=i, accuracy=a) for i, a in report.scores],
        margin=report.margin,
        read_from=[pb.ReadFrom(task_id=i, weights=w) for i, w in by_owner.items() if i],
        claimed=by_owner.get(0, (0,) * len(report.owners)),
    )


def progress(event: ProgressEvent, total_epochs: int, steps_per_epoch: int) -> pb.Progress:
    """A progress event as the message; the one ending a phase says why it stopped."""
    return pb.Progress(
        phase=event.phase,
        epoch=event.epoch,
        step=event.step,
        loss=event.loss,
        accuracy=event.accuracy,
        density=event.density,
        free_capacity=event.free_capacity,
        total_epochs=total_epochs,
        steps_per_epoch=steps_per_epoch,
        stopped=event.stopped or "",
        phase_epochs=int(event.extra.get("epochs", 0)) if event.stopped else 0,
        kept_epoch=int(event.extra.get("kept_epoch", 0)) if event.stopped else 0,
        tune=tune_report(event.tune) if event.tune is not None else None,
    )


def tune_report(report: TuneReport) -> pb.TuneReport:
    """A tune search's report as the message (k as the hyper-parameters carry it)."""
    trials = [
        pb.TuneTrial(
            density=t.density,
            k=hyper.message({"k": t.k}).k,
            k_units=list(t.k_units),
            val_accuracy=t.val_accuracy,
            seconds=t.seconds,
            error=t.error,
        )
        for t in report.trials
    ]
    return pb.TuneReport(
        trials=trials, chosen=report.chosen, tolerance=report.tolerance, seconds=report.seconds
    )


def backbone_info(b: Backbone) -> pb.BackboneInfo:
    """The backbone's architecture, free capacity per layer, and what runs inference."""
    layers = [
        pb.LayerInfo(
            kind=layer.kind,
            weight_shape=list(layer.weight_shape),
            out_shape=list(layer.out_shape),
            weights=layer.numel,
            free_weights=n,
            free_capacity=n / layer.numel,
        )
        for layer, n in zip(b.spec.layers, b.free_weights, strict=True)
    ]
    return pb.BackboneInfo(
        spec=str(b.spec),
        seed=b.seed,
        input_shape=list(b.spec.input_shape),
        layers=layers,
        free_capacity=b.spec.overall([layer.free_capacity for layer in layers]),
        tasks=b.tasks,
        max_tasks=MAX_TASKS,
        tracking_uri=b.tracking_uri,
        experiment_id=b.experiment_id,
        engine=pb.EngineInfo(**dataclasses.asdict(b.engine)),
    )


ANALYSES: dict[int, str] = {
    pb.ANALYSIS_WEIGHT_AGNOSTIC: "weight-agnostic",
    pb.ANALYSIS_LAYER_ROBUSTNESS: "layer-robustness",
    pb.ANALYSIS_NOISE: "noise",
}


def analysis_name(analysis: int) -> str:
    """The sparse_engine name of an Analysis enum value; InvalidInputError when unset/unknown."""
    if analysis not in ANALYSES:
        names = ", ".join(pb.Analysis.Name(a) for a in ANALYSES)
        raise InvalidInputError(f"analysis must be one of {names}, got {analysis}")
    return ANALYSES[analysis]


def analyze_response(table: AnalysisTable, run_id: str) -> pb.AnalyzeResponse:
    """An analysis result table as the Analyze reply."""
    codes = {name: code for code, name in ANALYSES.items()}
    return pb.AnalyzeResponse(
        task=table.task,
        analysis=codes[table.analysis],  # type: ignore[arg-type]
        columns=list(table.columns),
        rows=[pb.AnalysisRow(label=label, values=list(values)) for label, values in table.rows],
        summary=[pb.AnalysisSummary(name=k, value=v) for k, v in table.summary],
        examples=table.examples,
        mlflow_run_id=run_id,
    )
