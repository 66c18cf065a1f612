"""benchmarks/capacity.py: tasks past the backbone's free capacity, a row per checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.capacity import Settings, falls_from, run, save, table
from sparse_engine.mnist import Mnist

TINY_RUN = Settings(
    tasks=4,
    checkpoints=(2, 4),
    backbone="mlp:784-32-32",
    train_limit=600,
    test_limit=200,
    density=0.4,  # two tasks leave less than 40 % of a layer free
    epochs=1,
    retrain_epochs=1,
    lr=3e-3,
    label="test",
)


def test_a_run_past_capacity_keeps_bwt_zero_and_rows_per_checkpoint(
    mnist: Mnist, tmp_path: Path
) -> None:
    result = run(TINY_RUN, mnist)
    rows = result["rows"]
    assert [r["tasks"] for r in rows] == [2, 4]
    assert result["learned_as"][:2] == ["free", "free"]
    assert rows[-1]["mix_tasks"] + rows[-1]["supermask_tasks"] >= 1
    assert all(r["bwt"] == 0.0 for r in rows)
    assert all(0 < r["acc"] <= 100 for r in rows)
    assert all(
        r["identity_bytes_per_task"] + r["owned_bytes_per_task"]
        < r["bytes_per_task"]
        < r["bytes_per_task_packed"]
        for r in rows
    )
    out = tmp_path / "capacity.json"
    save(out, result)
    assert json.loads(out.read_text())["runs"]["test"]["rows"] == rows
    assert table(result).count("\n") == 1 + len(rows)


def test_falls_from_names_the_first_of_five_tasks_each_a_point_below_the_first_ten() -> None:
    assert falls_from([95.0] * 20) is None
    assert falls_from([95.0] * 12 + [93.0, 96.0] + [93.0] * 6) == 15
