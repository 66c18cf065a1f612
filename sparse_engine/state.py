"""A task as one safetensors blob: what storage keeps so a task can be restored.

A ``Task`` holds only what the task adds: its mask (bit-packed, then zlib-compressed on
disk: a 10 % mask takes about 0.56 bits per weight rather than 1; tasks stored before keep
theirs bit-packed only, and load as they are), the values of the weights it owns, its
biases, k-WTA state and head. Older tasks' weights are never part of
it, so storage grows with the weights each task owns, not with the backbone's size. No
pickle: tensors go through safetensors, the record and config through JSON in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .config import TaskConfig
from .kwta import KWinnersState
from .task import LEARNED_AS, LearnedAs, ReuseReport, Task, TaskRecord
from .taskfree import TaskIdentity

IDENTITY = ("mean", "basis", "variances", "noise")  # TaskIdentity's fields, in order

FORMAT = "sparsecl.task/1"
MASK_LEVEL = 9  # zlib level of the stored masks: ~0.2 s per million weights, at commit only


def pack_mask(mask: Tensor) -> Tensor:
    """A bool mask as uint8 bytes, 8 weights per byte (np.packbits of the flattened mask)."""
    return torch.from_numpy(np.packbits(mask.reshape(-1).numpy().astype(np.bool_)))


def unpack_mask(packed: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of ``pack_mask`` for a mask of ``shape``."""
    count = int(np.prod(shape))
    bits = np.unpackbits(packed.numpy(), count=count).astype(np.bool_)
    return torch.from_numpy(bits).reshape(tuple(shape))


def compress_mask(mask: Tensor) -> Tensor:
    """``pack_mask``'s bytes zlib-compressed, as uint8 (what ``dumps`` stores)."""
    packed = pack_mask(mask).numpy().tobytes()
    return torch.frombuffer(bytearray(zlib.compress(packed, MASK_LEVEL)), dtype=torch.uint8)


def stored_mask(tensors: dict[str, Tensor], i: int, shape: Sequence[int]) -> Tensor:
    """Layer ``i``'s mask as stored: compressed (``maskz.i``), or bit-packed only
    (``mask.i``, tasks stored before masks were compressed)."""
    if f"maskz.{i}" not in tensors:
        return unpack_mask(tensors[f"mask.{i}"], shape)
    size = -(-int(np.prod(shape)) // 8)
    try:
        inflate = zlib.decompressobj()
        packed = inflate.decompress(tensors[f"maskz.{i}"].numpy().tobytes(), size)
    except zlib.error as e:
        raise ValueError(f"mask {i} does not decompress: {e}") from None
    if len(packed) != size or inflate.unconsumed_tail or not inflate.eof:
        raise ValueError(f"mask {i} does not hold {size} bytes for a mask of shape {shape}")
    return unpack_mask(torch.frombuffer(bytearray(packed), dtype=torch.uint8), shape)


def _record_json(record: TaskRecord) -> dict[str, Any]:
    return dataclasses.asdict(record)


def _record_from(data: dict[str, Any]) -> TaskRecord:
    return TaskRecord(
        id=int(data["id"]),
        name=str(data["name"]),
        classes=tuple(int(c) for c in data["classes"]),
        density=tuple(float(d) for d in data["density"]),
        weights_owned=int(data["weights_owned"]),
        weights_read=int(data["weights_read"]),
        val_accuracy=float(data["val_accuracy"]),
        free_capacity=tuple(float(f) for f in data["free_capacity"]),
        seconds=float(data["seconds"]),
        history=tuple(dict(h) for h in data.get("history", ())),
        reuse=ReuseReport.from_json(data["reuse"]) if data.get("reuse") else None,
        learned_as=_learned_as(data.get("learned_as", "free")),
    )


def _learned_as(value: Any) -> LearnedAs:
    """A stored ``learned_as`` (absent in tasks stored before capacity.py: "free")."""
    for known in LEARNED_AS:
        if value == known:
            return known
    raise ValueError(f"learned_as {value!r} is not one of {LEARNED_AS}")


def config_from_dict(data: dict[str, Any]) -> TaskConfig:
    """A TaskConfig from its ``dataclasses.asdict`` form (lists, per-layer k and reuse,
    become tuples)."""
    values: dict[str, Any] = {n: tuple(v) if isinstance(v, list) else v for n, v in data.items()}
    return TaskConfig(**values)


def dumps(state: Task) -> bytes:
    """The task as safetensors bytes (tensors) with its record, config and k-WTA in metadata."""
    tensors: dict[str, Tensor] = {}
    for i, mask in enumerate(state.masks):
        tensors[f"maskz.{i}"] = compress_mask(mask)
        tensors[f"own.{i}"] = state.own_values[i].contiguous()
        tensors[f"bias.{i}"] = state.biases[i].contiguous()
        tensors[f"kwta.{i}.duty_cycle"] = state.kwta[i].duty_cycle.contiguous()
        units = state.kwta[i].units
        if units is not None:  # structured pruning's kept units; absent = all kept
            tensors[f"kwta.{i}.units"] = units.to(torch.uint8).contiguous()
    tensors["head.weight"] = state.head_weight.contiguous()
    tensors["head.bias"] = state.head_bias.contiguous()
    if state.identity is not None:  # absent in tasks stored before task-free inference
        for key in IDENTITY:
            tensors[f"identity.{key}"] = getattr(state.identity, key).contiguous()
    meta = {
        "format": FORMAT,
        "record": json.dumps(_record_json(state.record)),
        "config": json.dumps(dataclasses.asdict(state.config)),
        "mask_shapes": json.dumps([list(m.shape) for m in state.masks]),
        "kwta": json.dumps([{"k": s.k, "boost_strength": s.boost_strength} for s in state.kwta]),
    }
    return st_save(tensors, metadata=meta)


def loads(blob: bytes) -> Task:
    """Read back what ``dumps`` wrote; raises ValueError on anything malformed."""
    try:
        tensors = st_load(blob)
        meta = metadata(blob)
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} blob (format {meta.get('format')!r})")
        shapes = json.loads(meta["mask_shapes"])
        kwta_meta = json.loads(meta["kwta"])
        layers = range(len(shapes))
        return Task(
            record=_record_from(json.loads(meta["record"])),
            config=config_from_dict(json.loads(meta["config"])),
            masks=tuple(stored_mask(tensors, i, shapes[i]) for i in layers),
            own_values=tuple(tensors[f"own.{i}"] for i in layers),
            biases=tuple(tensors[f"bias.{i}"] for i in layers),
            kwta=tuple(
                KWinnersState(
                    int(kwta_meta[i]["k"]),
                    float(kwta_meta[i]["boost_strength"]),
                    tensors[f"kwta.{i}.duty_cycle"],
                    _units(
                        tensors.get(f"kwta.{i}.units"),
                        tensors[f"kwta.{i}.duty_cycle"].numel(),
                        int(kwta_meta[i]["k"]),
                    ),
                )
                for i in layers
            ),
            head_weight=tensors["head.weight"],
            head_bias=tensors["head.bias"],
            identity=_identity(tensors),
        )
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed task blob: {e!r}") from None


def _identity(tensors: dict[str, Tensor]) -> TaskIdentity | None:
    """The task-identity model as stored, or None for a task stored before it existed. Its
    mean and directions are float16 (taskfree.PRECISION), or float32 as stored before."""
    if "identity.mean" not in tensors:
        return None
    identity = TaskIdentity(*(tensors[f"identity.{key}"] for key in IDENTITY))
    if {identity.mean.dtype, identity.basis.dtype} - {torch.float16, torch.float32}:
        raise ValueError(
            f"task-identity tensors of dtypes {identity.mean.dtype}, {identity.basis.dtype}"
        )
    c, dim = identity.mean.shape
    d = identity.components
    if (
        tuple(identity.basis.shape) != (c, dim, d)
        or tuple(identity.variances.shape) != (c, d)
        or tuple(identity.noise.shape) != (c,)
    ):
        raise ValueError(f"task-identity tensors of inconsistent shapes ({c} classes, {dim} in)")
    return identity


def _units(stored: Tensor | None, units: int, k: int) -> Tensor | None:
    """Kept-row flags as stored (uint8), or None for a task with every unit kept (and for
    tasks stored before structured pruning existed); checked against the layer's ``units``
    k-WTA units and its ``k``."""
    if stored is None:
        return None
    rows = stored.to(torch.bool).reshape(-1)
    if (
        rows.numel() == 0
        or units % rows.numel()
        or not k <= int(rows.sum()) * (units // rows.numel())
    ):
        raise ValueError(f"kept units of shape {tuple(stored.shape)} do not fit {units} units")
    return rows


def metadata(blob: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (8-byte little-endian length, then JSON)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    return dict(header.get("__metadata__", {}))


__all__ = ["compress_mask", "dumps", "loads", "metadata", "pack_mask", "unpack_mask"]
