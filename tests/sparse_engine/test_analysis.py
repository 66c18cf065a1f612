"""Analyses of committed tasks (weight-agnostic, layer robustness, noise) on real MNIST tasks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from sparse_engine import analysis
from sparse_engine.backbone import Backbone
from sparse_engine.data import TaskData, from_numpy
from sparse_engine.errors import InvalidInputError, UnknownTaskError
from sparse_engine.mnist import Mnist, normalize
from sparse_engine.model import SparseCL
from sparse_engine.trainer import TaskTrainer

from .conftest import FAST, TINY, task_of


@dataclass(frozen=True)
class Learned:
    """Two tasks learned on one backbone, with the backbone as it was before each."""

    model: SparseCL
    before: tuple[list[torch.Tensor], list[torch.Tensor]]  # backbone before task a, b
    train_b: TaskData
    test: TaskData  # MNIST test images of every digit


@pytest.fixture(scope="module")
def learned(mnist: Mnist) -> Learned:
    model = SparseCL(TINY, seed=3)
    before_a = [w.clone() for w in model.backbone.weights]
    model.learn_task("a", task_of(mnist, [0, 1]), config=FAST)
    before_b = [w.clone() for w in model.backbone.weights]
    train_b = task_of(mnist, [2, 3])
    model.learn_task("b", train_b, config=FAST)
    test = normalize(from_numpy(mnist.x_test[:1000], mnist.y_test[:1000]))
    return Learned(model, (before_a, before_b), train_b, test)


ANALYSES: dict[str, Callable[[Learned], object]] = {
    "weight-agnostic": lambda s: analysis.weight_agnostic(s.model, "b", s.test),
    "layer-robustness": lambda s: analysis.layer_robustness(s.model, "b", s.test),
    "noise": lambda s: analysis.noise_robustness(s.model, "b", s.test, s.train_b, epochs=1),
}


@pytest.mark.parametrize("which", sorted(ANALYSES))
def test_analysis_leaves_model_untouched(learned: Learned, which: str) -> None:
    model = learned.model
    logits = {t: model.logits(t, learned.test.x) for t in ("a", "b")}
    weights = [w.clone() for w in model.backbone.weights]
    owners = [m.clone() for m in model.owners.maps]
    heads = {t: model.task(t).head_weight.clone() for t in ("a", "b")}
    ANALYSES[which](learned)
    for t in ("a", "b"):
        assert torch.equal(logits[t], model.logits(t, learned.test.x))
        assert torch.equal(heads[t], model.task(t).head_weight)
    for before, after in zip(weights, model.backbone.weights, strict=True):
        assert torch.equal(before, after)
    for before, after in zip(owners, model.owners.maps, strict=True):
        assert torch.equal(before, after)


# ---- weight-agnostic -----------------------------------------------------------------------
def test_weight_agnostic_trained_accuracy_is_the_tasks_own(learned: Learned) -> None:
    result = analysis.weight_agnostic(learned.model, "b", learned.test)
    kept = learned.test.subset(torch.isin(learned.test.y, torch.tensor([2, 3])))
    assert result.examples == len(kept)
    assert result.trained_accuracy == pytest.approx(learned.model.accuracy("b", kept))


def test_weight_agnostic_reports_the_best_shared_weight_of_the_sweep(learned: Learned) -> None:
    result = analysis.weight_agnostic(learned.model, "b", learned.test, weights=(0.05, 0.5, 5.0))
    assert result.weights == (0.05, 0.5, 5.0)
    assert result.best_accuracy == max(result.accuracies)
    assert result.best_weight == result.weights[result.accuracies.index(result.best_accuracy)]


def test_weight_agnostic_signed_mask_beats_random_weights_on_it(learned: Learned) -> None:
    # Zhou et al. 2019: the mask plus the trained signs carry most of the task
    result = analysis.weight_agnostic(learned.model, "b", learned.test)
    assert result.best_accuracy > result.random_accuracy + 0.1


def test_weight_agnostic_without_signs_changes_the_result(learned: Learned) -> None:
    signed = analysis.weight_agnostic(learned.model, "b", learned.test, weights=(0.1,))
    unsigned = analysis.weight_agnostic(
        learned.model, "b", learned.test, weights=(0.1,), keep_sign=False
    )
    assert signed.accuracies != unsigned.accuracies


@pytest.mark.parametrize(
    "weights", [(), (float("nan"),), (1e9,), tuple(float(i) for i in range(65))]
)
def test_weight_agnostic_refuses_a_bad_sweep(learned: Learned, weights: tuple[float, ...]) -> None:
    with pytest.raises(InvalidInputError, match="weights"):
        analysis.weight_agnostic(learned.model, "b", learned.test, weights=weights)


# ---- layer robustness ----------------------------------------------------------------------
def test_initial_weights_regenerate_the_backbone_before_each_task(learned: Learned) -> None:
    for task_id, before in enumerate(learned.before, 1):
        regenerated = analysis.initial_weights(learned.model, task_id)
        free = [m == 0 for m in learned.model.owners.maps] if task_id == 1 else None
        for i, (r, b) in enumerate(zip(regenerated, before, strict=True)):
            if free is None:  # before task 2: compare where task 1 did not write
                owned_by_a = learned.model.owners.maps[i] == 1
                assert torch.equal(r[~owned_by_a], b[~owned_by_a])
            else:
                assert torch.equal(r, b)


def test_reinit_values_are_each_weights_value_before_its_owner_trained(learned: Learned) -> None:
    model = learned.model
    task = model.task("b")
    initial = analysis.task_initial_weights(model, task)
    reads_a = False
    for i, mask in enumerate(task.masks):
        owners = model.owners.maps[i]
        for owner, before in ((1, learned.before[0][i]), (2, learned.before[1][i])):
            where = mask & (owners == owner)
            reads_a |= owner == 1 and bool(where.any())
            assert torch.equal(initial[i][where], before[where])
    assert reads_a, "task b should read some of task a's weights for this test to mean much"


def test_initial_head_is_the_head_the_learner_starts_from(learned: Learned) -> None:
    task = learned.model.task("b")
    spec = learned.model.spec
    generator = torch.Generator().manual_seed(task.config.seed)
    trainer = TaskTrainer(
        Backbone(spec), learned.model.owners.owned(), len(task.classes), task.config, generator
    )
    weight, bias = analysis.initial_head(task, spec.features)
    assert torch.equal(weight, trainer.head.weight.detach())
    assert torch.equal(bias, trainer.head.bias.detach())


def test_layer_robustness_rerandomising_any_layer_costs_accuracy(learned: Learned) -> None:
    result = analysis.layer_robustness(learned.model, "b", learned.test, draws=5)
    assert result.layers == ("layer0", "layer1", "head")
    assert all(drop > 0.05 for drop in result.rerandom_drop)
    assert result.reinit_drop == tuple(result.baseline_accuracy - a for a in result.reinit_accuracy)


def test_reinit_after_untrained_learning_leaves_accuracy_unchanged(mnist: Mnist) -> None:
    # a supermask with a fixed head trains no weight, bias or head value (only scores): every
    # kept value is still its initial one, so re-initialising a layer changes nothing
    model = SparseCL(TINY, seed=1)
    still = dataclasses.replace(
        FAST, method="supermask", epochs=2, lr=1e-2, supermask_train_head=False
    )
    model.learn_task("a", task_of(mnist, [0, 1]), config=still)
    model.learn_task("b", task_of(mnist, [2, 3]), config=still)
    data = task_of(mnist, [2, 3], limit=400)
    result = analysis.layer_robustness(model, "b", data)
    assert result.reinit_accuracy == (result.baseline_accuracy,) * 3


# ---- noise robustness ----------------------------------------------------------------------
def test_noise_free_level_is_the_tasks_accuracy_and_dense_net_learns(learned: Learned) -> None:
    result = analysis.noise_robustness(
        learned.model, "b", learned.test, learned.train_b, levels=(0.0,)
    )
    kept = learned.test.subset(torch.isin(learned.test.y, torch.tensor([2, 3])))
    assert result.sparse_accuracy[0] == pytest.approx(learned.model.accuracy("b", kept))
    assert result.dense_accuracy[0] > 0.8
    assert result.dense_epochs == FAST.epochs + FAST.retrain_epochs


def test_strong_noise_lowers_both_accuracies(learned: Learned) -> None:
    result = analysis.noise_robustness(
        learned.model, "b", learned.test, learned.train_b, levels=(0.0, 4.0), epochs=1
    )
    assert result.sparse_accuracy[1] < result.sparse_accuracy[0]
    assert result.dense_accuracy[1] < result.dense_accuracy[0]


def test_noise_refuses_training_data_of_other_classes(learned: Learned, mnist: Mnist) -> None:
    with pytest.raises(InvalidInputError, match="training example"):
        analysis.noise_robustness(learned.model, "b", learned.test, task_of(mnist, [7, 8]))


@pytest.mark.parametrize("levels", [(-0.1,), (float("inf"),), ()])
def test_noise_refuses_bad_levels(learned: Learned, levels: tuple[float, ...]) -> None:
    with pytest.raises(InvalidInputError, match="noise levels"):
        analysis.noise_robustness(learned.model, "b", learned.test, learned.train_b, levels)


def test_stopped_analysis_raises_and_leaves_the_model_untouched(learned: Learned) -> None:
    model = learned.model
    before = model.logits("b", learned.test.x)
    polls = iter(range(1000))
    with pytest.raises(analysis.AnalysisStoppedError):
        analysis.noise_robustness(
            model, "b", learned.test, learned.train_b, epochs=5, stop=lambda: next(polls) == 3
        )
    assert torch.equal(before, model.logits("b", learned.test.x))


# ---- shared input checks -------------------------------------------------------------------
@pytest.mark.parametrize("which", sorted(ANALYSES))
def test_unknown_task_is_refused(learned: Learned, which: str) -> None:
    with pytest.raises(UnknownTaskError):
        {
            "weight-agnostic": lambda: analysis.weight_agnostic(learned.model, "zz", learned.test),
            "layer-robustness": lambda: analysis.layer_robustness(
                learned.model, "zz", learned.test
            ),
            "noise": lambda: analysis.noise_robustness(
                learned.model, "zz", learned.test, learned.train_b
            ),
        }[which]()


def test_evaluation_data_without_the_tasks_labels_is_refused(
    learned: Learned, mnist: Mnist
) -> None:
    with pytest.raises(InvalidInputError, match="belongs to task 'b'"):
        analysis.layer_robustness(learned.model, "b", task_of(mnist, [7, 8]))


def test_inputs_of_the_wrong_width_are_refused(learned: Learned) -> None:
    data = TaskData(torch.zeros(4, 10), torch.tensor([2, 3, 2, 3]))
    with pytest.raises(InvalidInputError, match="do not fit"):
        analysis.weight_agnostic(learned.model, "b", data)
