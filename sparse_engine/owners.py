"""The owner map: one small integer per backbone weight, 0 = free, t = owned by task t.

A deleted task's id stays on the weights it owns that a remaining task reads (*retired*:
frozen, owned by no served task); ids are never reused, so no later task writes them. They
go back to the free pool (0) once no remaining task reads them (``release``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .backbone import BackboneSpec

OWNER_DTYPE = torch.int16
MAX_TASKS = torch.iinfo(OWNER_DTYPE).max


class OwnerMap:
    """Which task owns each backbone weight; only ``claim`` and ``release`` change it."""

    def __init__(self, spec: BackboneSpec) -> None:
        self.maps: list[Tensor] = [
            torch.zeros(layer.weight_shape, dtype=OWNER_DTYPE) for layer in spec.layers
        ]

    def free(self) -> list[Tensor]:
        """Per layer, a bool tensor of the weights no task owns."""
        return [m == 0 for m in self.maps]

    def owned(self) -> list[Tensor]:
        """Per layer, a bool tensor of the weights some task owns (hence frozen)."""
        return [m != 0 for m in self.maps]

    def free_capacity(self) -> list[float]:
        """Per layer, the fraction of weights still owned by no task."""
        return [int((m == 0).sum()) / m.numel() for m in self.maps]  # exact, not float32

    def free_count(self) -> list[int]:
        return [int((m == 0).sum()) for m in self.maps]

    def owned_by(self, task_id: int) -> list[Tensor]:
        return [m == task_id for m in self.maps]

    def counts(self) -> list[dict[int, int]]:
        """Per layer, owner id → how many weights it owns (0 = free), by id."""
        out = []
        for m in self.maps:
            ids, n = torch.unique(m, return_counts=True)
            out.append({int(i): int(c) for i, c in zip(ids.tolist(), n.tolist(), strict=True)})
        return out

    def claim(self, task_id: int, masks: Sequence[Tensor]) -> list[Tensor]:
        """Give task ``task_id`` the free weights in ``masks``; returns what it claimed."""
        if not 1 <= task_id <= MAX_TASKS:
            raise ValueError(f"task id {task_id} outside 1..{MAX_TASKS}")
        claimed = [mask & (m == 0) for mask, m in zip(masks, self.maps, strict=True)]
        for m, c in zip(self.maps, claimed, strict=True):
            m[c] = task_id
        return claimed

    def release(self, retired: Iterable[int], reading: Sequence[Tensor]) -> list[Tensor]:
        """Free the weights owned by a ``retired`` (deleted) task id that no mask in
        ``reading`` (per layer, the remaining tasks' masks OR-ed) covers; returns them."""
        ids = torch.tensor(sorted(set(retired)), dtype=OWNER_DTYPE)
        freed = [torch.isin(m, ids) & ~r for m, r in zip(self.maps, reading, strict=True)]
        for m, f in zip(self.maps, freed, strict=True):
            m[f] = 0
        return freed

    def load(self, maps: Sequence[Tensor]) -> None:
        """Replace the maps (rebuilding from storage); shapes must match."""
        for old, new in zip(self.maps, maps, strict=True):
            if old.shape != new.shape:
                raise ValueError(f"owner map shape {tuple(new.shape)} != {tuple(old.shape)}")
        self.maps = [m.to(OWNER_DTYPE).clone() for m in maps]
