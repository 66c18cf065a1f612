"""One table of a task's hyper-parameters (sparse_engine.config.SETTINGS) behind the proto
message, the wire conversion, the client and the CLI: a field added to one and not the
others fails here."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from client import Client
from client.cli import build_parser
from sparse_engine.config import SETTINGS, TaskConfig
from sparsecl import hyper
from sparsecl.v1 import sparsecl_pb2 as pb

NAMES = set(SETTINGS)


def flags(command: str) -> set[str]:
    """The hyper-parameter options of a CLI command, as field names."""
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    group = next(g for g in sub.choices[command]._action_groups if "hyper" in (g.title or ""))
    return {a.dest for a in group._group_actions}


def test_the_table_has_a_row_per_field_of_task_config() -> None:
    assert list(SETTINGS) == [f.name for f in dataclasses.fields(TaskConfig)]


def test_the_proto_message_has_the_fields_of_the_table() -> None:
    assert {f.name for f in pb.HyperParameters.DESCRIPTOR.fields} == NAMES
    assert set(hyper.NAMES) == NAMES


@pytest.mark.parametrize("command", ["add-task", "demo"])
def test_the_cli_has_a_flag_per_hyper_parameter(command: str) -> None:
    assert flags(command) == NAMES


def test_the_cli_flags_take_the_tables_types_and_choices() -> None:
    given = ["--k", "0.1,5", "--no-supermask-train-head", "--epochs", "3", "--lr", "0.01"]
    args = build_parser("add-task").parse_args(
        ["add-task", "t", "--train", "t.npz", *given, "--method", "rigl"]
    )
    assert (args.k, args.supermask_train_head, args.epochs, args.lr) == ((0.1, 5), False, 3, 0.01)
    assert args.method == "rigl" and args.density is None


def test_the_epoch_flags_take_auto_or_a_count() -> None:
    given = ["--epochs", "auto", "--retrain-epochs", "3", "--patience", "2", "--max-epochs", "9"]
    args = build_parser("add-task").parse_args(["add-task", "t", "--train", "t.npz", *given])
    assert (args.epochs, args.retrain_epochs, args.patience, args.max_epochs) == ("auto", 3, 2, 9)


def test_an_epoch_flag_that_is_neither_auto_nor_a_count_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser("add-task").parse_args(["add-task", "t", "--train", "t", "--epochs", "soon"])
    assert e.value.code == 2
    assert "'soon' is neither a count nor 'auto'" in capsys.readouterr().err


def test_auto_epochs_travel_as_minus_one_and_come_back_as_auto() -> None:
    """The proto's documented wire form of auto; unset stays unset (the server's default)."""
    message = hyper.message({"epochs": "auto", "retrain_epochs": 0, "patience": 2})
    assert message == pb.HyperParameters(epochs=hyper.AUTO_EPOCHS, retrain_epochs=0, patience=2)
    assert hyper.AUTO_EPOCHS == -1
    assert hyper.values(message) == {"epochs": "auto", "retrain_epochs": 0, "patience": 2}
    assert TaskConfig(**hyper.values(pb.HyperParameters())).epochs == "auto"


def test_every_setting_travels_to_the_server_and_back() -> None:
    """The client's and the server's one conversion: every field, k per layer included."""
    values = dataclasses.asdict(
        TaskConfig(k=(5, 0.25), epochs=3, method="rigl", seed=7, patience=4, max_epochs=11)
    )
    message = hyper.message(values)
    assert {f.name for f, _ in message.ListFields()} == NAMES
    assert hyper.values(message) == values


def test_unset_and_none_values_stay_off_the_wire() -> None:
    assert hyper.message({"lr": None, "epochs": 1}) == pb.HyperParameters(epochs=1)
    assert hyper.values(pb.HyperParameters()) == {}


def test_an_unknown_hyper_parameter_is_refused_before_any_call() -> None:
    data = (np.zeros((4, 784), np.float32), np.array([0, 1, 0, 1]))
    with Client("127.0.0.1:9") as client, pytest.raises(TypeError, match="did you mean 'lr'"):
        client.add_task("t", data, lrr=0.1)


def test_the_k_flag_takes_auto_alone_or_per_layer(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser("add-task").parse_args
    assert parse(["add-task", "t", "--train", "t.npz", "--k", "auto"]).k == "auto"
    assert parse(["add-task", "t", "--train", "t.npz", "--k", "auto,20"]).k == ("auto", 20)
    with pytest.raises(SystemExit) as e:
        parse(["add-task", "t", "--train", "t.npz", "--k", "most"])
    assert e.value.code == 2
    assert "'most' is neither a count, a fraction nor 'auto'" in capsys.readouterr().err


def test_auto_k_travels_as_a_count_of_minus_one_and_comes_back_as_auto() -> None:
    """k's wire form of auto mirrors the epochs' one; unset k is the default, auto."""
    message = hyper.message({"k": ("auto", 0.25, 7)})
    assert [k.count if k.WhichOneof("size") == "count" else k.fraction for k in message.k] == [
        hyper.AUTO_K,
        0.25,
        7,
    ]
    assert hyper.AUTO_K == -1
    assert hyper.values(message) == {"k": ("auto", 0.25, 7)}
    assert hyper.values(hyper.message({"k": "auto"})) == {"k": "auto"}
    assert TaskConfig(**hyper.values(pb.HyperParameters())).k == "auto"
