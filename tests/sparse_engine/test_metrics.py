from __future__ import annotations

import pytest

from sparse_engine.metrics import AccuracyMatrix

ROWS = [[0.9, 0.0, 0.0], [0.8, 0.95, 0.0], [0.7, 0.9, 0.99]]


def test_acc_is_the_mean_of_the_last_row() -> None:
    assert AccuracyMatrix.from_rows(ROWS).acc() == pytest.approx((0.7 + 0.9 + 0.99) / 3)


def test_bwt_compares_final_with_just_learned_accuracy() -> None:
    assert AccuracyMatrix.from_rows(ROWS).bwt() == pytest.approx(((0.7 - 0.9) + (0.9 - 0.95)) / 2)


def test_forgetting_uses_the_best_earlier_accuracy() -> None:
    rows = [[0.8, 0.0, 0.0], [0.9, 0.9, 0.0], [0.6, 0.7, 0.9]]
    # task 0: best 0.9, final 0.6; task 1: best 0.9, final 0.7
    assert AccuracyMatrix.from_rows(rows).forgetting() == pytest.approx((0.3 + 0.2) / 2)


def test_a_matrix_without_forgetting_has_zero_bwt() -> None:
    rows = [[0.9, 0, 0], [0.9, 0.8, 0], [0.9, 0.8, 0.7]]
    matrix = AccuracyMatrix.from_rows(rows)
    assert matrix.bwt() == 0.0
    assert matrix.forgetting() == 0.0


def test_format_shows_percentages_and_blank_cells() -> None:
    matrix = AccuracyMatrix(2)
    matrix.record(0, 0, 0.5)
    text = matrix.format(["a", "b"])
    assert "50.00" in text
    assert "nan" not in text


def test_long_task_names_stay_apart_in_the_table() -> None:
    matrix = AccuracyMatrix.from_rows([[0.99, float("nan")], [0.98, 0.97]])
    head = matrix.format(["digits-01", "digits-23"]).splitlines()[0]
    assert head.split() == ["digits-01", "digits-23"]


def test_fwt_compares_each_later_task_with_it_learned_alone() -> None:
    # diagonal 0.9, 0.95, 0.99 against alone 0.9, 0.93, 1.0: task 1 has no earlier task
    fwt = AccuracyMatrix.from_rows(ROWS).fwt([0.9, 0.93, 1.0])
    assert fwt == pytest.approx(((0.95 - 0.93) + (0.99 - 1.0)) / 2)


def test_fwt_needs_one_reference_per_task() -> None:
    with pytest.raises(ValueError, match="need 3 reference"):
        AccuracyMatrix.from_rows(ROWS).fwt([0.9, 0.93])
