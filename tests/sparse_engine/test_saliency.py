from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from sparse_engine import saliency


def quadratic(a: Tensor):  # type: ignore[no-untyped-def]
    """Loss ½ wᵀAw, whose Hessian is A (symmetric)."""

    def loss(ws: Sequence[Tensor], _x: Tensor, _y: Tensor) -> Tensor:
        w = ws[0].flatten()
        return 0.5 * w @ a @ w

    return loss


def test_hutchinson_estimates_the_hessian_diagonal() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g)
    a = m @ m.T + torch.diag(torch.arange(1.0, 7.0))
    w = torch.randn(2, 3, generator=g)
    batches = [(torch.zeros(1), torch.zeros(1))] * 4000
    diag = saliency.hessian_diagonal(quadratic(a), [w], batches, g)[0]
    assert torch.allclose(diag.flatten(), torch.diagonal(a), rtol=0.1, atol=0.3)


def test_obd_is_half_h_w_squared() -> None:
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # diagonal: Hutchinson is exact
    w = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    batches = [(torch.zeros(1), torch.zeros(1))]
    s = saliency.obd(quadratic(a), [w], batches, torch.Generator().manual_seed(1))[0]
    assert torch.allclose(s, 0.5 * torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * w**2)


def test_taylor_is_abs_gradient_times_weight() -> None:
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    w = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    s = saliency.taylor(quadratic(a), [w], [(torch.zeros(1), torch.zeros(1))])[0]
    grad = (a @ w.flatten()).reshape(2, 2)
    assert torch.allclose(s, (grad * w).abs())


def test_top_mask_keeps_the_highest_scores_among_candidates_only() -> None:
    score = torch.tensor([[9.0, 1.0, 5.0], [7.0, 3.0, 8.0]])
    candidates = torch.tensor([[False, True, True], [True, True, True]])
    mask = saliency.top_mask(score, candidates, keep=2)
    assert mask.tolist() == [[False, False, False], [True, False, True]]


def test_top_mask_refuses_more_than_the_candidates() -> None:
    with pytest.raises(ValueError, match="cannot keep"):
        saliency.top_mask(torch.ones(2, 2), torch.eye(2, dtype=torch.bool), keep=3)


def test_density_schedule_is_geometric_and_ends_at_the_budget() -> None:
    schedule = saliency.density_schedule(0.125, 3)
    assert schedule == pytest.approx([0.5, 0.25, 0.125])
