"""The promises of the continual learner: zero forgetting, frozen owned weights, sparsity."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from sparse_engine.config import ProgressEvent, Saliency, TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.engine import InferenceEngine
from sparse_engine.errors import (
    InvalidInputError,
    TaskExistsError,
    UnknownTaskError,
)
from sparse_engine.mnist import Mnist
from sparse_engine.model import SparseCL
from sparse_engine.task import TaskNet

from .conftest import FAST, TINY, task_of


def snapshot(model: SparseCL) -> dict[str, object]:
    """Everything a refused call must leave unchanged."""
    return {
        "weights": [w.clone() for w in model.backbone.weights],
        "owners": [m.clone() for m in model.owners.maps],
        "tasks": list(model.tasks),
    }


def assert_unchanged(model: SparseCL, before: dict[str, object]) -> None:
    after = snapshot(model)
    assert after["tasks"] == before["tasks"]
    for a, b in zip(after["weights"], before["weights"], strict=True):  # type: ignore[call-overload]
        assert torch.equal(a, b)
    for a, b in zip(after["owners"], before["owners"], strict=True):  # type: ignore[call-overload]
        assert torch.equal(a, b)


def test_zero_forgetting_logits_bit_identical_after_each_later_task(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    t1_after_1 = model.logits("t1", probe.x)
    model.learn_task("t2", three_tasks[1], config=FAST)
    t1_after_2, t2_after_2 = model.logits("t1", probe.x), model.logits("t2", probe.x)
    model.learn_task("t3", three_tasks[2], config=FAST)
    assert torch.equal(t1_after_1, t1_after_2)
    assert torch.equal(t1_after_2, model.logits("t1", probe.x))
    assert torch.equal(t2_after_2, model.logits("t2", probe.x))


def fresh_logits(model: SparseCL, name: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Task ``name``'s scores computed anew from the backbone as it is now, by the reference
    net and by a new engine. ``model.logits`` and ``model.reference_logits`` answer from a
    plan and a net built earlier, which hold copies of the weights: they cannot see a later
    write to the backbone, which a restarted server (rebuilding from the backbone) would."""
    task = model.task(name)
    reference = TaskNet(model.spec, model.backbone.weights, task)(x)
    return reference, InferenceEngine(model.spec).logits(task, model.backbone.weights, x)


# Plain Adam (the default), and optimizers whose state reaches every parameter it is given
# (momentum buffers, coupled or decoupled weight decay): an owned weight that reached one
# of those would move, while plain Adam leaves a parameter with zero gradient exactly where
# it is and cannot tell. The learning rates are ones with which every method learns these
# tasks (a task no better than chance is refused).
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adam": {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0},
    "sgd-momentum-decay": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.05},
    "adamw-decay": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.5},
}
METHODS: dict[str, dict[str, Any]] = {
    "prune-finetune": {},
    "prune-rewind": {"retrain": "rewind"},
    "supermask": {"method": "supermask", "epochs": 3},
    "rigl": {"method": "rigl", "rigl_interval": 2},
    "units": {"structure": "units", "density": 0.5},
}


def forgetting_config(method: str, optimizer: str) -> TaskConfig:
    config = dataclasses.replace(FAST, epochs=2, retrain_epochs=2)
    config = dataclasses.replace(config, **OPTIMIZERS[optimizer], **METHODS[method])
    if (method, optimizer) == ("supermask", "sgd-momentum-decay"):
        config = dataclasses.replace(config, lr=0.3)  # scores need a larger step than weights
    return config


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("method", list(METHODS))
def test_zero_forgetting_with_every_method_and_optimizer(
    three_tasks: list[TaskData], probe: TaskData, method: str, optimizer: str
) -> None:
    """After each later task: every earlier task's owned weights, owner entries and
    scores (recomputed from the backbone) are bit-identical."""
    config = forgetting_config(method, optimizer)
    model = SparseCL(TINY)
    scores: dict[str, tuple[torch.Tensor, ...]] = {}
    for t, data in enumerate(three_tasks, 1):
        owners = [m.clone() for m in model.owners.maps]
        owned = [w[m != 0].clone() for w, m in zip(model.backbone.weights, owners, strict=True)]
        model.learn_task(f"t{t}", data, config=config)
        for before, after in zip(owners, model.owners.maps, strict=True):
            assert torch.equal(after[before != 0], before[before != 0])
        for w, m, v in zip(model.backbone.weights, owners, owned, strict=True):
            assert torch.equal(w[m != 0], v)
        for name, want in scores.items():
            got = fresh_logits(model, name, probe.x)
            assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True)), name
        scores[f"t{t}"] = fresh_logits(model, f"t{t}", probe.x)
    assert sum(int((m == 3).sum()) for m in model.owners.maps) > 0  # task 3 claimed weights


class Cancelled(Exception):
    """Raised by a progress callback to stop a learn, as the server's cancel does."""


def with_first_task(three_tasks: list[TaskData], config: TaskConfig) -> SparseCL:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=config)
    return model


def assert_first_task_unchanged(
    model: SparseCL,
    before: dict[str, object],
    scores: tuple[torch.Tensor, ...],
    x: torch.Tensor,
) -> None:
    """The model as ``before`` and task t1's scores on ``x`` bit for bit ``scores``."""
    assert_unchanged(model, before)
    got = fresh_logits(model, "t1", x)
    assert all(torch.equal(g, w) for g, w in zip(got, scores, strict=True))


def test_preparing_a_task_changes_nothing_until_it_is_committed(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    config = forgetting_config("prune-finetune", "sgd-momentum-decay")
    model = with_first_task(three_tasks, config)
    before, scores = snapshot(model), fresh_logits(model, "t1", probe.x)
    model.prepare_task("t2", three_tasks[1], config=config)
    assert_first_task_unchanged(model, before, scores, probe.x)


def test_a_task_cancelled_mid_training_changes_nothing(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    config = forgetting_config("prune-finetune", "sgd-momentum-decay")
    model = with_first_task(three_tasks, config)
    before, scores = snapshot(model), fresh_logits(model, "t1", probe.x)
    phases: list[str] = []

    def cancel_in_retraining(event: ProgressEvent) -> None:
        phases.append(event.phase)
        if event.phase == "retrain":  # trained, pruned, retrained one epoch
            raise Cancelled

    with pytest.raises(Cancelled):
        model.learn_task("t2", three_tasks[1], config=config, progress=cancel_in_retraining)
    assert phases[:2] == ["train", "train"] and "prune" in phases
    assert_first_task_unchanged(model, before, scores, probe.x)


def test_zero_forgetting_on_a_cnn_backbone(three_tasks: list[TaskData], probe: TaskData) -> None:
    model = SparseCL("cnn:1x28x28-c4-c8-32")
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = model.logits("t1", probe.x)
    model.learn_task("t2", three_tasks[1], config=FAST)
    assert torch.equal(before, model.logits("t1", probe.x))


@pytest.mark.parametrize(
    "optimizer",
    [
        {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.05},
        {"optimizer": "adam", "weight_decay": 0.05},
        {"optimizer": "adamw", "weight_decay": 0.5},
    ],
    ids=["sgd-momentum-decay", "adam-decay", "adamw-decay"],
)
def test_owned_weights_never_written(three_tasks: list[TaskData], optimizer: dict) -> None:
    config = dataclasses.replace(FAST, **optimizer)
    model = SparseCL(TINY)
    for t, data in enumerate(three_tasks, 1):
        owned = [m != 0 for m in model.owners.maps]
        values = [w[o].clone() for w, o in zip(model.backbone.weights, owned, strict=True)]
        model.learn_task(f"t{t}", data, config=config)
        for w, o, v in zip(model.backbone.weights, owned, values, strict=True):
            assert torch.equal(w[o], v)
    assert sum(int((m == 3).sum()) for m in model.owners.maps) > 0  # task 3 claimed weights


@pytest.mark.parametrize("saliency", ["obd", "taylor"])
def test_owned_weights_never_written_with_gradient_saliencies(
    three_tasks: list[TaskData], saliency: Saliency
) -> None:
    config = dataclasses.replace(FAST, saliency=saliency, saliency_batches=2)
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=config)
    owned = [m != 0 for m in model.owners.maps]
    values = [w[o].clone() for w, o in zip(model.backbone.weights, owned, strict=True)]
    model.learn_task("t2", three_tasks[1], config=config)
    for w, o, v in zip(model.backbone.weights, owned, values, strict=True):
        assert torch.equal(w[o], v)


def test_every_mask_holds_its_density_per_layer_from_first_to_tenth_task(mnist: Mnist) -> None:
    config = dataclasses.replace(FAST, density=0.08, epochs=2)
    model = SparseCL(TINY)
    for t in range(10):
        model.learn_task(f"t{t + 1}", task_of(mnist, [t, (t + 1) % 10], limit=300), config=config)
    for task in model.tasks.values():
        for mask, layer in zip(task.masks, model.spec.layers, strict=True):
            assert abs(int(mask.sum()) - 0.08 * layer.numel) <= 1


def test_kwta_leaves_exactly_k_nonzero_units_per_sample(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=dataclasses.replace(FAST, k=(5, 9)))
    counts = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: counts.append((out != 0).sum(1)))
        for layer in model.net("t1").kwta
    ]
    model.reference_logits("t1", probe.x)
    for h in hooks:
        h.remove()
    assert torch.equal(counts[0], torch.full((len(probe),), 5))
    assert torch.equal(counts[1], torch.full((len(probe),), 9))


def test_task_owns_only_weights_in_its_own_mask(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    model.learn_task("t2", three_tasks[1], config=FAST)
    for t, task in enumerate(model.tasks.values(), 1):
        for owners, mask in zip(model.owners.maps, task.masks, strict=True):
            assert bool(mask[owners == t].all())
            # a mask reads only weights owned by itself or by earlier tasks
            assert bool(((owners[mask] >= 1) & (owners[mask] <= t)).all())


def test_taken_name_is_refused_and_changes_nothing(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = snapshot(model)
    with pytest.raises(TaskExistsError):
        model.learn_task("t1", three_tasks[1], config=FAST)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: TaskData(d.x.reshape(len(d), -1)[:, :100], d.y), "do not fit the backbone"),
        (lambda d: TaskData(d.x.clone().fill_(float("nan")), d.y), "NaN"),
        (lambda d: TaskData(d.x, torch.zeros_like(d.y)), "at least 2 classes"),
    ],
    ids=["wrong-shape", "nan", "one-class"],
)
def test_bad_data_is_refused_and_changes_nothing(
    three_tasks: list[TaskData], make: object, message: str
) -> None:
    model = SparseCL(TINY)
    before = snapshot(model)
    with pytest.raises(InvalidInputError, match=message):
        model.learn_task("bad", make(three_tasks[0]), config=FAST)  # type: ignore[operator]
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", ["", "x" * 129, "a b", "tab\t"])
def test_bad_names_are_refused(three_tasks: list[TaskData], name: str) -> None:
    with pytest.raises(InvalidInputError, match="task name"):
        SparseCL(TINY).learn_task(name, three_tasks[0], config=FAST)


def test_k_larger_than_a_layer_is_refused(three_tasks: list[TaskData]) -> None:
    with pytest.raises(InvalidInputError, match="winners"):
        SparseCL(TINY).learn_task("t", three_tasks[0], config=dataclasses.replace(FAST, k=65))


def test_unknown_task_names_the_known_ones(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    with pytest.raises(UnknownTaskError, match="t1"):
        model.logits("nope", three_tasks[0].x)


def test_predictions_use_the_tasks_own_label_values(mnist: Mnist) -> None:
    data = task_of(mnist, [3, 8], limit=300)
    model = SparseCL(TINY)
    record = model.learn_task("t", data, config=FAST)
    assert record.classes == (3, 8)
    assert set(model.predict("t", data.x).tolist()) <= {3, 8}
    assert model.accuracy("t", data) > 0.8  # chance is 0.5


def test_learning_a_task_compiles_its_plan_before_the_first_prediction(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    assert set(model.engine.memory()) == {"t1"} and model.engine.builds == 1
    model.logits("t1", probe.x)
    assert model.engine.builds == 1
    assert model.plan("t1").memory == model.engine.memory()["t1"]


def test_the_plan_of_an_unknown_task_is_refused(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'"):
        model.plan("nope")
    assert model.engine.builds == 1


@pytest.fixture(scope="module")
def learned(three_tasks: list[TaskData]) -> SparseCL:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    return model


def test_numpy_and_torch_inputs_give_bit_identical_predictions(
    learned: SparseCL, mnist: Mnist
) -> None:
    """uint8 (scaled by 1/255), float32, float64 and a non-contiguous view, each as a numpy
    array and a torch tensor: the same logits to the bit, those of the float32 tensor."""
    images = mnist.x_test[:40].reshape(40, -1)  # uint8
    floats = (images / 255.0).astype(np.float32)
    want = learned.logits("t1", torch.from_numpy(floats))
    wide = np.zeros((40, 784 * 2), np.float32)
    wide[:, ::2] = floats
    variants = {
        "uint8": images,
        "float32": floats,
        "float64": floats.astype(np.float64),
        "non-contiguous": wide[:, ::2],
    }
    assert not variants["non-contiguous"].flags.c_contiguous
    for name, array in variants.items():
        for x in (array, torch.from_numpy(array)):
            got = learned.logits("t1", x)
            assert got.dtype == torch.float32
            assert torch.equal(got, want), f"{name} {type(x).__name__}"
            assert torch.equal(learned.predict("t1", x), learned.predict("t1", floats))
    labels = learned.predict("t1", floats).numpy()
    for y in (labels, torch.from_numpy(labels), labels.astype(np.int32)):
        assert learned.accuracy("t1", (images, y)) == 1.0


def test_learn_task_takes_numpy_and_torch_examples_alike(three_tasks: list[TaskData]) -> None:
    data = three_tasks[0]
    x, y = data.x.numpy(), data.y.numpy()
    from_numpy = SparseCL(TINY)
    from_numpy.learn_task("t", (x, y), config=FAST)
    from_torch = SparseCL(TINY)
    from_torch.learn_task("t", (data.x, data.y.to(torch.int32)), config=FAST)
    assert torch.equal(from_numpy.logits("t", x), from_torch.logits("t", data.x))
    assert torch.equal(from_numpy.logits("t", x), learned_on(data).logits("t", x))


def learned_on(data: TaskData) -> SparseCL:
    model = SparseCL(TINY)
    model.learn_task("t", data, config=FAST)
    return model


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((2, 784), np.int16), "got numpy.ndarray of dtype int16 and shape (2, 784)"),
        (torch.zeros(2, 784, dtype=torch.bool), "got torch.Tensor of dtype torch.bool and shape"),
        (np.zeros((2, 784), np.complex64), "got numpy.ndarray of dtype complex64 and shape"),
        (np.zeros((2, 784), object), "got numpy.ndarray of dtype object and shape (2, 784)"),
        (torch.zeros(2, 784, dtype=torch.bfloat16), "torch.Tensor of dtype torch.bfloat16"),
        ([[0.0] * 784] * 2, "must be a numpy array or a torch tensor, got list"),
        (np.zeros((2, 783), np.float32), "inputs of shape (2, 783) do not fit"),
        (np.full((2, 784), np.nan), "NaN or Inf values (1568 of 1568 in a float32 array"),
        (torch.full((2, 784), float("inf")), "NaN or Inf values (1568 of 1568 in a float32"),
    ],
    ids=[
        "int16",
        "torch-bool",
        "complex",
        "object",
        "bfloat16",
        "list",
        "shape",
        "numpy-nan",
        "torch-inf",
    ],
)
def test_refused_inputs_are_named_as_received(learned: SparseCL, x: Any, message: str) -> None:
    """Never 'must be float32, got float32': the message names the type, dtype and shape."""
    with pytest.raises(InvalidInputError) as e:
        learned.predict("t1", x)
    assert message in str(e.value)
