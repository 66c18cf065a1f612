"""benchmarks/published.py on a tiny stream: rows, BWT and capacity are what it claims."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.published import run_seed, summary
from sparse_engine.config import TaskConfig


def test_a_tiny_stream_forgets_nothing_and_counts_its_capacity() -> None:
    config = TaskConfig(density=0.2, k=0.5, epochs=1, retrain_epochs=1, batch_size=32)
    row = run_seed(0, tasks=2, config=config, train_limit=300)
    matrix = np.array(row.matrix, dtype=float)
    assert matrix[1, 0] == matrix[0, 0]  # the first task's test predictions are unchanged
    assert row.bwt == 0.0
    assert row.acc == float(np.mean(matrix[-1]))
    assert len(row.val_per_task) == len(row.seconds_per_task) == 2
    assert row.mask_bits_per_task == 784 * 100 + 100 * 100
    owned = sum(row.weights_owned)
    assert row.capacity_used == pytest.approx(owned / row.mask_bits_per_task)
    assert 0.2 <= row.capacity_used <= 0.4
    assert row.config["seed"] == 0
    assert "mean ± std" in summary([row])
