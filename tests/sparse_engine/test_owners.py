from __future__ import annotations

import pytest
import torch

from sparse_engine.backbone import BackboneSpec
from sparse_engine.owners import OwnerMap


def owner_map() -> OwnerMap:
    return OwnerMap(BackboneSpec.parse("mlp:10-4"))


def test_new_map_is_all_free_in_small_integers() -> None:
    owners = owner_map()
    assert owners.maps[0].dtype == torch.int16
    assert owners.free_capacity() == [1.0]


def test_claim_takes_only_free_weights() -> None:
    owners = owner_map()
    first = torch.zeros(4, 10, dtype=torch.bool)
    first[0] = True
    owners.claim(1, [first])
    second = torch.zeros(4, 10, dtype=torch.bool)
    second[:2] = True
    claimed = owners.claim(2, [second])
    assert int(claimed[0].sum()) == 10
    assert torch.equal(owners.maps[0][0], torch.ones(10, dtype=torch.int16))
    assert torch.equal(owners.maps[0][1], torch.full((10,), 2, dtype=torch.int16))
    assert owners.free_capacity() == [0.5]


def test_task_ids_must_be_positive() -> None:
    with pytest.raises(ValueError, match="task id"):
        owner_map().claim(0, [torch.ones(4, 10, dtype=torch.bool)])
