"""A task as one safetensors blob: masks compressed, and blobs of earlier releases loadable."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from sparse_engine.data import TaskData
from sparse_engine.model import SparseCL
from sparse_engine.state import dumps, loads, metadata, pack_mask
from sparse_engine.task import Task

from .conftest import FAST, TINY


@pytest.fixture(scope="module")
def task(three_tasks: list[TaskData]) -> Task:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    return model.task("t1")


def rewritten(blob: bytes, tensors: dict[str, torch.Tensor], record: dict[str, object]) -> bytes:
    """``blob`` with other tensors and record, as an earlier release would have written it."""
    return st_save(tensors, metadata=metadata(blob) | {"record": json.dumps(record)})


def test_masks_are_stored_compressed_to_fewer_bytes_than_bit_packed(task: Task) -> None:
    tensors = st_load(dumps(task))
    for i, mask in enumerate(task.masks):
        assert f"mask.{i}" not in tensors
        assert tensors[f"maskz.{i}"].numel() < 0.7 * pack_mask(mask).numel()
    assert all(torch.equal(a, b) for a, b in zip(loads(dumps(task)).masks, task.masks, strict=True))


def test_a_blob_with_bit_packed_masks_loads_the_same_masks(task: Task) -> None:
    blob = dumps(task)
    tensors = {k: v for k, v in st_load(blob).items() if not k.startswith("maskz.")}
    tensors |= {f"mask.{i}": pack_mask(m) for i, m in enumerate(task.masks)}
    old = rewritten(blob, tensors, json.loads(metadata(blob)["record"]))
    assert all(torch.equal(a, b) for a, b in zip(loads(old).masks, task.masks, strict=True))


def test_a_compressed_mask_that_does_not_inflate_to_its_shape_is_refused(task: Task) -> None:
    blob = dumps(task)
    tensors = st_load(blob)
    tensors["maskz.0"] = tensors["maskz.1"].clone()  # a 64 × 64 mask where 64 × 784 belongs
    bad = rewritten(blob, tensors, json.loads(metadata(blob)["record"]))
    with pytest.raises(ValueError, match="mask 0"):
        loads(bad)


def test_a_task_stored_before_capacity_fallbacks_loads_as_learned_free(task: Task) -> None:
    blob = dumps(task)
    record = json.loads(metadata(blob)["record"])
    del record["learned_as"]
    assert loads(rewritten(blob, st_load(blob), record)).record.learned_as == "free"
