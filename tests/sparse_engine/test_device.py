"""Where tasks train (device.py): the choices, the refusal of a GPU that is not there, CPU
training unchanged by the option, and (where there is a GPU) tasks trained on it that the
CPU engine serves bit for bit, before and after a rebuild from their stored state."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sparse_engine import analysis, state
from sparse_engine.config import DEVICES
from sparse_engine.data import TaskData
from sparse_engine.device import DeviceUnavailableError, module_device, resolve_device
from sparse_engine.errors import InvalidInputError
from sparse_engine.model import SparseCL
from sparse_engine.task import Task

from .conftest import FAST, TINY

CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine")
without_gpu = pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU")
# one config per way of finding a subnetwork, each touching its own device-sensitive code
CONFIGS = {
    "taylor": FAST,
    "obd-units": dataclasses.replace(FAST, saliency="obd", structure="units", density=0.5),
    "reinit": dataclasses.replace(FAST, retrain="reinit"),
    "supermask": dataclasses.replace(FAST, method="supermask", epochs=3),
    "rigl": dataclasses.replace(FAST, method="rigl", rigl_interval=2),
}


def tensors(task: Task) -> list[torch.Tensor]:
    """Every tensor a committed task holds (what storage keeps and the engine runs)."""
    kwta = [t for s in task.kwta for t in (s.duty_cycle, s.units) if t is not None]
    return [*task.masks, *task.own_values, *task.biases, *kwta, task.head_weight, task.head_bias]


def learn_all(model: SparseCL, tasks: list[TaskData], config: object) -> SparseCL:
    for i, data in enumerate(tasks[:2]):
        model.learn_task(f"t{i}", data, config=config)  # type: ignore[arg-type]
    return model


def test_the_choices_are_auto_cpu_and_cuda() -> None:
    assert DEVICES == ("auto", "cpu", "cuda")


def test_auto_takes_the_gpu_when_there_is_one_else_the_cpu() -> None:
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    assert resolve_device() == resolve_device("auto")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


@without_gpu
def test_cuda_without_a_gpu_is_refused_with_the_reason() -> None:
    with pytest.raises(DeviceUnavailableError, match="device 'cuda' asked for but") as refused:
        resolve_device("cuda")
    assert "use device 'auto' or 'cpu'" in str(refused.value)
    assert isinstance(refused.value, InvalidInputError)  # a ValueError: INVALID_ARGUMENT
    with pytest.raises(DeviceUnavailableError):
        resolve_device(torch.device("cuda"))
    with pytest.raises(DeviceUnavailableError):
        SparseCL(TINY, device="cuda")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "", "mps", "cuda:0"])
def test_other_names_are_refused_naming_the_choices(name: str) -> None:
    with pytest.raises(InvalidInputError, match=r"device must be one of \('auto', 'cpu', 'cuda'\)"):
        resolve_device(name)


def test_a_model_trains_on_the_resolved_device_and_keeps_its_state_on_the_cpu() -> None:
    model = SparseCL(TINY, device="cpu")
    assert model.device == torch.device("cpu")
    assert SparseCL(TINY).device == resolve_device("auto")
    assert module_device(model.backbone) == torch.device("cpu")


@pytest.mark.parametrize("method", list(CONFIGS))
def test_training_on_the_cpu_explicitly_is_bit_identical_to_the_default(
    three_tasks: list[TaskData], method: str
) -> None:
    """``device="cpu"`` trains exactly as a model made without the option (on a machine
    without a GPU, where auto is the CPU, as the default too)."""
    models = [SparseCL(TINY, device="cpu"), SparseCL(TINY, device=torch.device("cpu"))]
    if not CUDA:
        models.append(SparseCL(TINY))
    for model in models:
        learn_all(model, three_tasks, CONFIGS[method])
    first = models[0]
    for other in models[1:]:
        for name in first.tasks:
            for a, b in zip(tensors(first.task(name)), tensors(other.task(name)), strict=True):
                assert torch.equal(a, b)
        for a, b in zip(first.backbone.weights, other.backbone.weights, strict=True):
            assert torch.equal(a, b)


# ---- on a GPU ------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("method", list(CONFIGS))
def test_tasks_trained_on_the_gpu_are_committed_on_the_cpu_and_forget_nothing(
    three_tasks: list[TaskData], probe: TaskData, method: str
) -> None:
    model = SparseCL(TINY, device="cuda")
    assert model.device.type == "cuda"
    model.learn_task("t0", three_tasks[0], config=CONFIGS[method])
    before = model.logits("t0", probe.x)
    weights = [w.clone() for w in model.backbone.weights]
    owned = model.owners.owned()
    model.learn_task("t1", three_tasks[1], config=CONFIGS[method])
    for name in model.tasks:
        assert all(t.device.type == "cpu" for t in tensors(model.task(name)))
    assert all(w.device.type == "cpu" for w in model.backbone.weights)
    for w0, w1, o in zip(weights, model.backbone.weights, owned, strict=True):
        assert torch.equal(w0[o], w1[o])  # weights t0 owns are never written
    assert torch.equal(before, model.logits("t0", probe.x))
    for name in model.tasks:
        torch.testing.assert_close(
            model.logits(name, probe.x), model.reference_logits(name, probe.x)
        )
    assert model.accuracy("t1", three_tasks[1]) > 0.5  # learned (some configs underfit here)


@needs_gpu
def test_gpu_trained_tasks_serve_bit_identically_after_a_rebuild_from_their_state(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    """A restart: a new model (on the CPU) commits the stored states in order, and answers
    bit for bit what the GPU-trained model answered."""
    trained = learn_all(SparseCL(TINY, device="cuda"), three_tasks, FAST)
    rebuilt = SparseCL(TINY, device="cpu")
    for task in trained.records():
        rebuilt.commit_task(state.loads(state.dumps(trained.task(task.name))))
    for name in trained.tasks:
        assert torch.equal(trained.logits(name, probe.x), rebuilt.logits(name, probe.x))
    for a, b in zip(trained.backbone.weights, rebuilt.backbone.weights, strict=True):
        assert torch.equal(a, b)


@needs_gpu
def test_the_dense_comparison_of_the_noise_analysis_trains_on_the_gpu(
    three_tasks: list[TaskData],
) -> None:
    model = learn_all(SparseCL(TINY, device="cuda"), three_tasks, FAST)
    result = analysis.noise_robustness(
        model, "t0", three_tasks[0], three_tasks[0], levels=(0.0,), epochs=1
    )
    assert result.dense_accuracy[0] > 0.6 and result.sparse_accuracy[0] > 0.6
