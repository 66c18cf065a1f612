"""Hyper-parameters on the wire become TaskConfig (defaults for unset fields) and back."""

from __future__ import annotations

import pytest

from server.messages import hyper_parameters, task_config
from sparse_engine.config import SETTINGS, TaskConfig
from sparse_engine.errors import InvalidInputError
from sparsecl.v1 import sparsecl_pb2 as pb


def test_unset_fields_take_the_engine_defaults() -> None:
    assert task_config(pb.HyperParameters()) == TaskConfig()


def test_config_round_trips_with_k_per_layer() -> None:
    config = TaskConfig(density=0.2, k=(5, 0.25), epochs=3, optimizer="sgd", saliency="obd")
    assert task_config(hyper_parameters(config)) == config


def test_k_count_and_fraction_keep_their_kind() -> None:
    assert task_config(pb.HyperParameters(k=[pb.KSize(count=1)])).k == 1
    assert task_config(pb.HyperParameters(k=[pb.KSize(fraction=1.0)])).k == 1.0


def test_out_of_range_value_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="density"):
        task_config(pb.HyperParameters(density=0.0))


def test_every_field_travels_in_the_message() -> None:
    config = TaskConfig(k=3, method="supermask", supermask_train_head=False, seed=2**40)
    message = hyper_parameters(config)
    assert {f.name for f, _ in message.ListFields()} == set(SETTINGS)
    assert task_config(message) == config
