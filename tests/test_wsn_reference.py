"""benchmarks/wsn_reference.py: the data cache it writes for WSN's loader and the log it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.utils import shuffle

from benchmarks.wsn_reference import TASKS, parse, write_cache
from sparse_engine.mnist import MEAN, STD, mnist_path

LIMIT = 20


def test_the_cache_holds_the_images_wsns_loader_would_write(tmp_path: Path) -> None:
    seed = 1
    write_cache(tmp_path, seed, limit=LIMIT)
    with np.load(mnist_path()) as d:
        images, labels = d["x_test"][:LIMIT], d["y_test"][:LIMIT]
    cache = tmp_path / "data" / "binary_pmnist20"
    # WSN's loader: per task i (file r), each image normalised, then shuffled on its own
    for i, r in enumerate(shuffle(np.arange(TASKS), random_state=seed)):
        x = torch.load(cache / f"data{r}testx.bin")
        assert x.shape == (LIMIT, 1, 28, 28) and x.dtype == torch.float32
        for image, got in zip(images, x, strict=True):
            aux = (torch.from_numpy(image.reshape(-1)).float().div(255) - MEAN) / STD
            want = shuffle(aux.numpy(), random_state=int(r) * 100 + i)
            np.testing.assert_allclose(got.reshape(-1).numpy(), want, rtol=0, atol=1e-6)
        assert torch.equal(torch.load(cache / f"data{r}testy.bin"), torch.from_numpy(labels))


def test_the_log_gives_capacity_accuracy_and_bwt_per_task() -> None:
    log = (
        "Global Sparsity: 0.30002262443438915\n----\nTest: loss=0.080 , acc= 97.5%\n"
        "Global Sparsity: 0.4275\nTest: loss=0.111 , acc= 96.6%\n"
        "Final Avg accuracy: 97.05%\nBackward transfer:  0.00%\n"
    )
    row = parse(log)
    assert row == {
        "capacity": [0.30002262443438915, 0.4275],
        "test_acc": [97.5, 96.6],
        "acc": 97.05,
        "bwt": 0.0,
    }
