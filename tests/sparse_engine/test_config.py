from __future__ import annotations

import dataclasses
import json

import pytest

from sparse_engine.config import (
    HELP,
    PERIOD_STEPS,
    RANGES,
    SETTINGS,
    ProgressEvent,
    TaskConfig,
)
from sparse_engine.errors import InvalidInputError
from sparse_engine.mnist import Mnist, digits_task
from sparse_engine.model import SparseCL
from sparse_engine.state import config_from_dict

from ..serving import FAST, TINY


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("density", 0.0, "density"),
        ("density", 1.5, "density"),
        ("epochs", -1, "epochs"),
        ("lr", float("nan"), "lr"),
        ("optimizer", "rmsprop", "optimizer"),
        ("saliency", "random", "saliency"),
        ("retrain", "rewind-late", "retrain"),
        ("prune_rounds", 0, "prune_rounds"),
        ("batch_size", 0, "batch_size"),
        ("rewind_epoch", -1, "rewind_epoch"),
        ("method", "lottery", "method"),
        ("rigl_interval", 0, "rigl_interval"),
        ("rigl_drop_fraction", 0.0, "rigl_drop_fraction"),
        ("rigl_drop_fraction", 1.0, "rigl_drop_fraction"),
        ("supermask_train_head", "yes", "supermask_train_head"),
    ],
)
def test_out_of_range_hyper_parameters_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TaskConfig(**{field: value})  # type: ignore[arg-type]


def test_help_and_ranges_name_only_fields() -> None:
    assert set(HELP) == set(SETTINGS) and set(RANGES) <= set(SETTINGS)


def outside(name: str) -> list[float]:
    """Values just outside a setting's range, at both ends (an open end is itself outside)."""
    low, high, ends = RANGES[name]
    step = 1 if SETTINGS[name].kind is int else 1e-9
    return [low if ends[0] == "(" else low - step, high if ends[1] == ")" else high + step]


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_range_of_the_table_is_enforced_at_both_ends(name: str) -> None:
    for value in outside(name):
        with pytest.raises(InvalidInputError, match=rf"{name} must lie in [\[(]"):
            TaskConfig(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_setting_refuses_a_value_of_the_wrong_kind(name: str) -> None:
    kind = SETTINGS[name].kind
    if kind is tuple:
        return  # k: a count, a fraction or one per layer, checked against the backbone
    wrong = {bool: "yes", int: 1.5, float: "0.1", str: "nope"}[kind]
    with pytest.raises(InvalidInputError, match=name):
        TaskConfig(**{name: wrong})  # type: ignore[arg-type]


def test_no_training_at_all_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 1"):
        TaskConfig(epochs=0, retrain_epochs=0)


def test_rewind_needs_retraining() -> None:
    with pytest.raises(InvalidInputError, match="rewind"):
        TaskConfig(retrain="rewind", retrain_epochs=0)


@pytest.mark.parametrize("retrain", ["late_rewind", "reinit", "sign_constant"])
def test_every_reset_before_retraining_needs_retraining(retrain: str) -> None:
    with pytest.raises(InvalidInputError, match=f"retrain '{retrain}' needs retrain_epochs"):
        TaskConfig(retrain=retrain, retrain_epochs=0)  # type: ignore[arg-type]


def test_late_rewind_point_must_lie_within_dense_training() -> None:
    with pytest.raises(InvalidInputError, match="rewind_epoch 3 lies beyond the 2 epoch"):
        TaskConfig(retrain="late_rewind", epochs=2, rewind_epoch=3)
    assert TaskConfig(retrain="late_rewind", epochs=2, rewind_epoch=2).rewind_epoch == 2


@pytest.mark.parametrize("method", ["supermask", "rigl"])
def test_pruning_options_are_refused_for_methods_that_do_not_prune(method: str) -> None:
    with pytest.raises(InvalidInputError, match=f"applies to method 'prune' only, not '{method}'"):
        TaskConfig(method=method, retrain="rewind")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="prune_rounds applies to method 'prune' only"):
        TaskConfig(method=method, prune_rounds=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["supermask", "rigl"])
def test_methods_without_a_dense_phase_need_epochs(method: str) -> None:
    with pytest.raises(InvalidInputError, match=f"method '{method}' needs epochs >= 1"):
        TaskConfig(method=method, epochs=0, retrain_epochs=2)  # type: ignore[arg-type]


def test_a_config_stored_before_the_research_modes_loads_with_their_defaults() -> None:
    stored = dataclasses.asdict(TaskConfig(density=0.2, retrain="rewind"))
    new = ("rewind_epoch", "method", "supermask_train_head", "rigl_interval", "rigl_drop_fraction")
    for name in new:
        del stored[name]
    config = config_from_dict(json.loads(json.dumps(stored)))
    assert config == TaskConfig(density=0.2, retrain="rewind")
    assert config.method == "prune"


def test_k_per_layer_must_match_the_backbone_depth() -> None:
    assert TaskConfig(k=0.2).k_per_layer(3) == (0.2, 0.2, 0.2)
    with pytest.raises(InvalidInputError, match="2 values"):
        TaskConfig(k=(5, 6)).k_per_layer(3)


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "supermask", "epochs": 2, "retrain_epochs": 1},
        {"method": "rigl", "epochs": 1, "retrain_epochs": 2},
        {"prune_rounds": 2, "retrain_epochs": 1},
    ],
    ids=["supermask", "rigl", "prune-2-rounds"],
)
def test_total_epochs_is_what_the_learner_runs(mnist: Mnist, changes: dict[str, object]) -> None:
    """The one formula of the epochs a task trains (progress totals, --max-epochs, analyses)."""
    config = dataclasses.replace(TaskConfig(**FAST), **changes)  # type: ignore[arg-type]
    train = digits_task([0, 1], 120, mnist)
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", train, None, config, events.append)
    ran = max(e.epoch for e in events if e.phase in ("train", "retrain"))
    assert config.total_epochs == ran


def test_epochs_are_auto_by_default_and_bounded_by_max_epochs() -> None:
    config = TaskConfig()
    assert (config.epochs, config.retrain_epochs) == ("auto", "auto")
    assert config.total_epochs == 2 * config.max_epochs  # the most a default task trains
    assert (
        TaskConfig(epochs=3, retrain_epochs="auto", max_epochs=7, prune_rounds=2).total_epochs == 17
    )
    assert TaskConfig(epochs=2, retrain_epochs=2).total_epochs == 4
    assert [s.name for s in SETTINGS.values() if s.auto] == ["epochs", "retrain_epochs"]


def test_auto_epochs_count_periods_of_at_least_period_steps_on_small_data() -> None:
    """An epoch of fewer than PERIOD_STEPS steps makes auto's period several epochs; fixed
    counts and epochs of PERIOD_STEPS steps or more are untouched."""
    config = TaskConfig(epochs=3, retrain_epochs="auto", max_epochs=7)
    steps = (1, 5, PERIOD_STEPS - 1, PERIOD_STEPS, 3 * PERIOD_STEPS)
    assert [config.epochs_per_period(s) for s in steps] == [
        PERIOD_STEPS,
        -(-PERIOD_STEPS // 5),
        2,
        1,
        1,
    ]
    assert config.bound("auto", 5) == 7 * -(-PERIOD_STEPS // 5) and config.bound(3, 5) == 3
    assert config.most_epochs(5) == 3 + 7 * -(-PERIOD_STEPS // 5)
    assert config.most_epochs(PERIOD_STEPS) == config.total_epochs == 3 + 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": "soon"}, "epochs must be an integer or 'auto', got 'soon'"),
        ({"patience": "auto"}, "patience must be an integer, got 'auto'"),
        ({"max_epochs": 0}, "max_epochs must lie in [1, 1000], got 0"),
        (
            {"retrain": "late_rewind", "rewind_epoch": 8, "max_epochs": 5},
            "rewind_epoch 8 lies beyond the 5 epoch(s)",
        ),
    ],
    ids=["epochs-word", "patience-auto", "max-epochs-0", "late-rewind-past-max-epochs"],
)
def test_auto_epochs_settings_are_checked(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        TaskConfig(**changes)  # type: ignore[arg-type]
    assert message in str(e.value)
