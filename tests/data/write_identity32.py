"""Writes tests/data/identity32.npz: two task blobs whose task-identity models are float32
(as every release stored them before float16 identity models) and the task-free scores
that release computed, for tests/sparse_engine/test_taskfree.py.

Run it with the code of that release, from its checkout's root (written with commit
ae755af): ``python tests/data/write_identity32.py OUT``. Each task learns two digits on a
tiny backbone; its identity model is fitted on 6 images per class (5 directions), so that
the file stays small. ``scores`` are ``IdentityBank.scores`` of the probe images (float64).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path.cwd()))

from sparse_engine import SparseCL, TaskConfig
from sparse_engine.mnist import load_mnist
from sparse_engine.state import dumps
from sparse_engine.taskfree import IdentityBank, fit_identity
from tests.serving import TINY, digits

# reuse all: written for tasks that read earlier tasks' weights (the default until auto)
CONFIG = TaskConfig(
    density=0.1, k=0.25, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3, reuse="all"
)


def main(out: Path) -> None:
    mnist = load_mnist()
    model = SparseCL(TINY, seed=0)
    blobs, identities = [], []
    for name, which in (("low", [0, 1]), ("high", [7, 8])):
        x, y = digits(mnist, which, n=200)
        model.learn_task(name, (x, y), None, CONFIG)
        few = np.concatenate([np.flatnonzero(y == c)[:6] for c in which])
        identity = fit_identity(model.check_inputs(x[few]), torch.from_numpy(y[few]))
        task = dataclasses.replace(model.task(name), identity=identity)
        blobs.append(np.frombuffer(dumps(task), dtype=np.uint8))
        identities.append(identity)
    probe = mnist.x_test[:64]
    scores = IdentityBank(identities).scores(model.check_inputs(probe))
    np.savez_compressed(out, low=blobs[0], high=blobs[1], probe=probe, scores=scores.numpy())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
