"""sparsecl as an Avalanche strategy, measured by Avalanche's own evaluation plugin."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
from avalanche.training.plugins import EvaluationPlugin

from sparse_engine.errors import TaskExistsError
from sparse_engine.mnist import Mnist, digits_task
from sparse_engine.strategy import SparseCLStrategy

from .conftest import FAST, TINY


@pytest.fixture(scope="module")
def tiny_stream(mnist: Mnist):  # type: ignore[no-untyped-def]
    """Three task-labelled experiences of real MNIST digits, 300 train / 200 test each."""
    tasks = [[0, 1], [2, 3], [4, 5]]
    train = [digits_task(d, limit=300, mnist=mnist) for d in tasks]
    test = [digits_task(d, limit=500, mnist=mnist).subset(slice(300, 500)) for d in tasks]
    return tensors_benchmark(
        train_tensors=[(t.x.unsqueeze(1), t.y) for t in train],
        test_tensors=[(t.x.unsqueeze(1), t.y) for t in test],
        task_labels=[0, 1, 2],
    )


def test_avalanche_metrics_report_learning_without_forgetting(tiny_stream) -> None:  # type: ignore[no-untyped-def]
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
    )
    strategy = SparseCLStrategy(backbone=TINY, config=FAST, evaluator=evaluator, eval_mb_size=64)
    for experience in tiny_stream.train_stream:
        strategy.train(experience)
        metrics = strategy.eval(tiny_stream.test_stream)
    assert metrics["StreamBWT/eval_phase/test_stream"] == 0.0
    assert metrics["StreamForgetting/eval_phase/test_stream"] == 0.0
    assert metrics["Top1_Acc_Stream/eval_phase/test_stream/Task002"] > 0.8  # chance is 0.5
    assert sorted(strategy.learner.tasks) == ["task-0", "task-1", "task-2"]


def test_experience_of_an_already_learned_task_label_is_refused(tiny_stream) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(FAST, epochs=1, retrain_epochs=0)
    strategy = SparseCLStrategy(backbone=TINY, config=config, evaluator=EvaluationPlugin())
    strategy.train(tiny_stream.train_stream[0])
    with pytest.raises(TaskExistsError, match="already learned"):
        strategy.train(tiny_stream.train_stream[0])
    assert list(strategy.learner.tasks) == ["task-0"]


def test_untrained_task_labels_score_no_class(tiny_stream) -> None:  # type: ignore[no-untyped-def]
    strategy = SparseCLStrategy(backbone=TINY, config=FAST, evaluator=EvaluationPlugin())
    strategy.train(tiny_stream.train_stream[0])
    x = torch.zeros(2, 1, 28, 28)
    out = strategy.model(x, torch.tensor([0, 1]))
    assert out[1].max() < -1e8
    assert out[0, :2].max() > -1e8
