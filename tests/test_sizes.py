"""benchmarks/sizes.py: a point is measured once, stored under a lock, and tabled by width."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sizes import DATASETS, load, point, save, summary
from sparse_engine.config import TaskConfig


def test_a_digits_point_is_saved_once_and_tabled_with_auto_against_the_best_k(
    tmp_path: Path,
) -> None:
    make, inputs, _ = DATASETS["digits"]
    config = TaskConfig(density=0.2, k="auto", epochs=1, retrain_epochs=1, lr=1e-2)
    measured = point(make(0), inputs, 16, config)
    assert 0 < measured["val"] <= 100 and measured["seconds"] > 0
    out = tmp_path / "sizes.json"
    meta = {"command": "test"}
    rows = [
        {"dataset": "digits", "width": 16, "seed": 0, "density": 0.1, "k": 0.25, "val": 90.0},
        {"dataset": "digits", "width": 16, "seed": 0, "density": 0.1, "k": 0.5, "val": 92.0},
        {"dataset": "digits", "width": 16, "seed": 0, "density": 0.1, "k": "auto", "val": 91.5},
        {"dataset": "digits", "width": 16, "seed": 0, "density": 0.2, "k": "auto", **measured},
        {"dataset": "digits", "width": 16, "seed": 0, "density": 0.1, "k": 0.5, "val": 93.0},
    ]
    for row in rows:
        save(out, meta, row)
    assert len(load(out)) == 4  # the second k 50 % replaced the first
    table = summary(load(out))
    assert "| 16 [1] (auto 8) | 90.00 | 93.00 | 91.50 |" in table
    assert "| 50% (8) | -1.50 |" in table
