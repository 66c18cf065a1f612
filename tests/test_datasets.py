"""benchmarks/datasets.py: a row per (data set, column, seed), stored once, tabled per data set."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.datasets import BEFORE, COLUMNS, Row, as_row, main, per_task, summary
from sparse_engine.kwta import auto_k


def test_the_quick_digits_run_stores_a_row_per_column_and_tables_them(tmp_path: Path) -> None:
    out = tmp_path / "datasets.json"
    assert main(["--quick", "--datasets", "digits", "--out", str(out)]) == 0
    rows = {r.column: r for r in (as_row(d) for d in json.loads(out.read_text())["rows"])}
    assert set(rows) == set(COLUMNS)
    before, after, dense = rows["before"], rows["after"], rows["dense"]
    for row in rows.values():
        assert row.dataset == "digits" and row.seed == 0 and row.backbone == "mlp:64-64-64"
        assert row.tasks == ["d01234", "d56789"]
        assert len(row.test) == len(row.val) == len(row.seconds) == len(row.epochs) == 2
        assert all(s > 0 for s in row.seconds)
        assert row.examples[0] > row.examples[1] > 0
    assert before.epochs == [4, 4] and before.k_units == [6, 6]  # 2 + 2 epochs, 10 % of 64
    assert before.config["k"] == BEFORE["k"] and after.config["epochs"] == "auto"
    assert after.k_units == [auto_k(64)] * 2
    assert all(e is not None and e >= 2 for e in after.epochs)  # each auto phase ran
    for row in (before, after):  # the first task's test accuracy never moved: BWT 0
        if not row.failed:
            assert row.test == row.test_at_learn and row.bwt == 0.0
    assert dense.bwt is None and dense.k_units is None and dense.failed == []
    assert dense.test == dense.test_at_learn and all(0 < v <= 100 for v in dense.test)  # type: ignore[operator]
    stored = out.read_text()
    assert main(["--quick", "--datasets", "digits", "--out", str(out)]) == 0
    assert out.read_text() == stored  # a rerun skips what is stored
    table = summary(list(rows.values()))
    assert table.count("\n| digits (mlp:64-64-64) | 1 |") == 1


def row(column: str, seed: int, test: list[float | None], epochs: list[int | None]) -> Row:
    """A stored row with made-up numbers (one and three seconds per task)."""
    sparse = column != "dense"
    return Row(
        dataset="digits",
        column=column,
        seed=seed,
        backbone="mlp:64-8-8",
        tasks=["a", "b"],
        test=test,
        test_at_learn=test,
        val=test,
        seconds=[1.0, 3.0],
        epochs=epochs,
        bwt=0.0 if sparse else None,
        k_units=[4, 4] if sparse else None,
        examples=[1, 1, 1],
        config={},
        failed=[],
    )


@pytest.fixture
def made_up() -> list[Row]:
    """Two seeds of each column, numbers chosen so that every cell is known."""
    return [
        row("before", 0, [80.0, 90.0], [4, 4]),
        row("before", 1, [70.0, 90.0], [4, 4]),
        row("after", 0, [95.0, 99.0], [20, 30]),
        row("after", 1, [97.0, 97.0], [10, 20]),
        row("dense", 0, [96.0, 98.0], [5, 5]),
        row("dense", 1, [96.0, 99.0], [5, 5]),
    ]


def test_the_table_means_over_seeds_and_names_the_worst_task(made_up: list[Row]) -> None:
    line = summary(made_up).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:5] == ["digits (mlp:64-8-8)", "2", "82.50", "97.00", "97.25"]
    # before: task a 75 − 96 = −21; after: task b (98 − 98.5 = −0.5) is below a (+0.0)
    assert cells[5:7] == ["-21.00 (a)", "-0.50 (b)"]
    assert cells[7:] == ["0.00 / 0.00", "2.00 / 2.00 / 2.00", "4.00 / 20.00 / 5.00"]
    tasks = per_task(made_up).splitlines()[2:]
    assert tasks == [
        "| digits (mlp:64-8-8) | a | 75.00 | 96.00 | 96.00 | +0.00 |",
        "| digits (mlp:64-8-8) | b | 90.00 | 98.00 | 98.50 | -0.50 |",
    ]


def test_a_task_not_committed_is_the_worst_and_is_listed(made_up: list[Row]) -> None:
    made_up[3] = replace(
        made_up[3], test=[98.0, None], epochs=[10, None], failed=["b: no better than chance"]
    )
    table = summary(made_up)
    cells = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert cells[3] == "97.50"  # after: seed 0's 97.0, seed 1's committed task alone: 98.0
    assert cells[6] == "not committed (b)"
    assert "digits after seed 1: not committed: b: no better than chance" in table


def test_archived_defaults_are_shown_beside_the_current_ones(made_up: list[Row]) -> None:
    """Rows of an earlier default (after-epochs) get their columns, gaps to dense included."""
    old = [
        row("after-epochs", 0, [90.0, 92.0], [8, 8]),
        row("after-epochs", 1, [92.0, 90.0], [9, 9]),
    ]
    table = summary(made_up + old).splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    cells = dict(zip(head, (c.strip() for c in table[2].strip("|").split("|")), strict=True))
    assert cells["after-epochs %"] == "91.00" and cells["after %"] == "97.00"
    # after-epochs: task a 91 − 96 = −5, task b 91 − 98.5 = −7.5
    assert cells["worst task: after-epochs − dense"] == "-7.50 (b)"
    assert cells["worst task: after − dense"] == "-0.50 (b)"
    assert cells["s/task before / after-epochs / after / dense"] == "2.00 / 2.00 / 2.00 / 2.00"
    tasks = per_task(made_up + old).splitlines()
    assert tasks[0].endswith("| after-epochs − dense | after − dense |")
    assert tasks[3] == "| digits (mlp:64-8-8) | b | 90.00 | 91.00 | 98.00 | 98.50 | -7.50 | -0.50 |"
    assert "after-epochs" not in summary(made_up)  # shown only where it has rows
