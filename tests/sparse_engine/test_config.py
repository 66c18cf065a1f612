from __future__ import annotations

import pytest

from sparse_engine.config import TaskConfig
from sparse_engine.errors import InvalidInputError


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
    ],
)
def test_out_of_range_hyper_parameters_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TaskConfig(**{field: value})  # type: ignore[arg-type]


def test_no_training_at_all_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 1"):
        TaskConfig(epochs=0, retrain_epochs=0)


def test_rewind_needs_retraining() -> None:
    with pytest.raises(InvalidInputError, match="rewind"):
        TaskConfig(retrain="rewind", retrain_epochs=0)


def test_k_per_layer_must_match_the_backbone_depth() -> None:
    assert TaskConfig(k=0.2).k_per_layer(3) == (0.2, 0.2, 0.2)
    with pytest.raises(InvalidInputError, match="2 values"):
        TaskConfig(k=(5, 6)).k_per_layer(3)
