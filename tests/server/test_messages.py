"""Hyper-parameters on the wire become TaskConfig (defaults for unset fields) and back."""

from __future__ import annotations

import pytest

from client.client import TaskReuse, tune_request
from server.messages import hyper_parameters, task_config, task_reuse, tune_search
from sparse_engine.config import SETTINGS, TaskConfig
from sparse_engine.errors import InvalidInputError
from sparse_engine.task import ReuseReport
from sparse_engine.tune import CANDIDATES, MAX_TRIALS, TOLERANCE, Search
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


def test_reuse_per_layer_travels_in_the_message() -> None:
    config = TaskConfig(reuse=("none", "similar"))
    assert list(hyper_parameters(config).reuse) == ["none", "similar"]
    assert task_config(hyper_parameters(config)) == config


def test_an_unknown_reuse_choice_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="reuse must be one of"):
        task_config(pb.HyperParameters(reuse=["none", "most"]))


def test_the_reuse_report_reaches_the_client_per_earlier_task_and_layer() -> None:
    report = ReuseReport(
        choice=("similar", "all"),
        chosen=(2,),
        baseline=0.9,
        scores=((1, 0.88), (2, 0.95)),
        margin=0.01,
        owners=(((0, 70), (2, 5)), ((0, 10), (1, 3), (2, 4))),
    )
    got = TaskReuse.from_proto(task_reuse(report))
    assert got == TaskReuse(
        choice=("similar", "all"),
        chosen=(2,),
        baseline=0.9,
        margin=0.01,
        scores={1: 0.88, 2: 0.95},
        read_from={1: (0, 3), 2: (5, 4)},
        claimed=(70, 10),
    )


def header_with(tune: pb.TuneRequest) -> pb.AddTaskHeader:
    return pb.AddTaskHeader(name="t", tune=tune)


def test_a_tune_request_without_pairs_takes_the_servers() -> None:
    search = tune_search(header_with(pb.TuneRequest()), TaskConfig())
    assert search == Search(CANDIDATES, TOLERANCE)


def test_tune_pairs_travel_with_their_k_kind_and_per_layer() -> None:
    pairs = [(0.05, "auto"), (0.1, 0.25), (0.3, (20, "auto"))]
    search = tune_search(header_with(tune_request(0.02, pairs)), TaskConfig())
    assert search.candidates == ((0.05, "auto"), (0.1, 0.25), (0.3, (20, "auto")))
    assert isinstance(search.candidates[2][1][0], int)
    assert search.tolerance == 0.02


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([(1.5, "auto")], "density"),
        ([(0.0, "auto")], "density"),
        ([(0.1, "auto")] * (MAX_TRIALS + 1), "1 to 9"),
    ],
)
def test_a_bad_tune_pair_is_invalid_input(pairs: list[tuple[float, object]], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        tune_search(header_with(tune_request(None, pairs)), TaskConfig())
