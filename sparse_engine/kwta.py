"""k-winners-take-all activations with boosting by duty cycle (Numenta's KWinners).

Semantics follow nupic.torch: the k units with the largest *boosted* value win and keep
their original value, every other unit is set to zero; while training, each unit's duty
cycle (how often it was positive) is tracked and units below the target density are
boosted by exp((k/n - duty) * strength). The boost strength decays by a factor per
epoch. Unlike nupic.torch, inference uses the same k as training by default
(``k_inference_factor=1.0``), so exactly k units per sample are non-zero.

A layer pruned by whole units (structured pruning) is *restricted* to its kept units:
removed units never win (they output exactly 0) and the boosting target is k / kept.

k "auto" (the default) is ``auto_k``: about 4·√units winners, the rule measured across
widths and data sets in benchmarks/sizes.py (benchmarks/RESULTS.md, "Sizes that adapt").
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .config import AUTO, KSize

# k "auto": a fraction AUTO_K_SCALE / sqrt(units) of a layer's units, clamped to
# AUTO_K_BOUNDS (benchmarks/sizes.py measured it: the best k grows as √width, not ∝ width)
AUTO_K_SCALE = 4.0
AUTO_K_BOUNDS = (0.05, 0.5)


def auto_k(units: int) -> int:
    """k "auto" for a layer of ``units``: round(clamp(4/√units, 5 %, 50 %) · units), >= 1."""
    low, high = AUTO_K_BOUNDS
    fraction = min(max(AUTO_K_SCALE / math.sqrt(units), low), high)
    return min(units, max(1, round(fraction * units)))


def resolve_k(k: KSize, units: int) -> int:
    """Turn k given as a count (int), a fraction in (0, 1] (float) or "auto" into a count."""
    if k == AUTO:
        return auto_k(units)
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise ValueError(f"k must be a count, a fraction or {AUTO!r}, got {k!r}")
    if isinstance(k, numbers.Integral):
        count = int(k)
    else:
        if not 0.0 < k <= 1.0:
            raise ValueError(f"k as a fraction must lie in (0, 1], got {k}")
        count = round(k * units)
    if not 1 <= count <= units:
        raise ValueError(f"k={k} gives {count} winners for a layer of {units} units")
    return count


def kwinners(
    x: Tensor, duty_cycle: Tensor, k: int, boost_strength: float, keep: Tensor | None = None
) -> Tensor:
    """Keep the k largest boosted units per sample (over all non-batch dims), zero the rest.

    ``keep`` (bool, one per unit) restricts the winners to the kept units."""
    flat = x.reshape(x.shape[0], -1)
    if boost_strength > 0.0:
        units = flat.shape[1] if keep is None else int(keep.sum())
        target = k / units
        boost = torch.exp((target - duty_cycle.reshape(1, -1)) * boost_strength)
        boosted = flat.detach() * boost
    else:
        boosted = flat.detach()
    if keep is None:
        winners = boosted.topk(k, dim=1, sorted=False).indices
    else:
        # top-k over the kept units gathered in order: the very array (and tie-breaking) a
        # plan compacted to those units ranks
        index = keep.nonzero().reshape(-1)
        winners = index[boosted[:, index].topk(k, dim=1, sorted=False).indices]
    out = torch.zeros_like(flat).scatter(1, winners, flat.gather(1, winners))
    return out.reshape(x.shape)


@dataclass(frozen=True)
class KWinnersState:
    """The frozen boost state of one k-WTA layer for one task."""

    k: int
    boost_strength: float
    duty_cycle: Tensor
    # structured pruning: bool per output row (unit of a linear layer, channel of a conv);
    # None = every unit kept
    units: Tensor | None = None

    def to(self, device: torch.device) -> KWinnersState:
        """The same state on ``device`` (itself when it is there already)."""
        if self.duty_cycle.device == device and (self.units is None or self.units.device == device):
            return self
        units = None if self.units is None else self.units.to(device)
        return replace(self, duty_cycle=self.duty_cycle.to(device), units=units)


def expand_units(units: Tensor, size: int) -> Tensor:
    """Per-row kept flags as per-unit flags over ``size`` units (a channel's H×W units)."""
    return units.repeat_interleave(size // units.numel())


class KWinners(nn.Module):
    """k-WTA over the units of a linear layer, or over C×H×W of a conv layer.

    ``units`` is the number of units one sample has in this layer (width, or C*H*W).
    """

    duty_cycle: Tensor

    def __init__(
        self,
        units: int,
        k: KSize,
        boost_strength: float = 1.0,
        boost_strength_factor: float = 0.9,
        duty_cycle_period: int = 1000,
        k_inference_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if boost_strength < 0.0:
            raise ValueError(f"boost_strength must be >= 0, got {boost_strength}")
        if not 0.0 <= boost_strength_factor <= 1.0:
            raise ValueError(
                f"boost_strength_factor must lie in [0, 1], got {boost_strength_factor}"
            )
        if duty_cycle_period < 1:
            raise ValueError(f"duty_cycle_period must be >= 1, got {duty_cycle_period}")
        self.units = units
        self.k = resolve_k(k, units)
        self.k_inference = min(units, max(1, round(self.k * k_inference_factor)))
        self.boost_strength = boost_strength
        self.boost_strength_factor = boost_strength_factor
        self.duty_cycle_period = duty_cycle_period
        self.learning_iterations = 0
        self.register_buffer("duty_cycle", torch.zeros(units))
        self.rows: Tensor | None = None  # kept rows (units or channels); None = all
        self.keep: Tensor | None = None  # the same, per k-WTA unit

    def restrict(self, rows: Tensor, k: int) -> None:
        """Only the units of the kept ``rows`` may win from now on, ``k`` of them."""
        keep = expand_units(rows, self.units)
        if not 1 <= k <= int(keep.sum()):
            raise ValueError(f"k={k} winners do not fit {int(keep.sum())} kept units")
        self.rows, self.keep = rows.clone(), keep
        self.k = k
        self.k_inference = k

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            out = kwinners(x, self.duty_cycle, self.k, self.boost_strength, self.keep)
            self._update_duty_cycle(out)
            return out
        return kwinners(x, self.duty_cycle, self.k_inference, self.boost_strength, self.keep)

    @torch.no_grad()
    def _update_duty_cycle(self, out: Tensor) -> None:
        batch = out.shape[0]
        self.learning_iterations += batch
        period = min(self.duty_cycle_period, self.learning_iterations)
        active = out.reshape(batch, -1).gt(0).sum(dim=0, dtype=torch.float)
        self.duty_cycle.mul_(period - batch).add_(active).div_(period)

    def update_boost_strength(self) -> None:
        """Decay the boost strength; called once per epoch while training."""
        self.boost_strength *= self.boost_strength_factor

    def state(self) -> KWinnersState:
        """A copy of the boost state, to freeze with a task at commit."""
        rows = None if self.rows is None else self.rows.clone()
        return KWinnersState(self.k, self.boost_strength, self.duty_cycle.detach().clone(), rows)

    @torch.no_grad()
    def resume(self, state: KWinnersState, iterations: int) -> None:
        """Back to an earlier boost state (``state()`` and ``learning_iterations`` then), as
        auto epochs do when they keep the best epoch's iterate."""
        self.boost_strength = state.boost_strength
        self.duty_cycle.copy_(state.duty_cycle)
        self.learning_iterations = iterations

    @classmethod
    def from_state(cls, state: KWinnersState) -> KWinners:
        """Rebuild a frozen (eval-mode) k-WTA layer from a committed task's state."""
        layer = cls(state.duty_cycle.numel(), state.k, boost_strength=state.boost_strength)
        layer.duty_cycle.copy_(state.duty_cycle)
        if state.units is not None:
            layer.restrict(state.units, state.k)
        return layer.eval()

    def extra_repr(self) -> str:
        return f"units={self.units}, k={self.k}, boost_strength={self.boost_strength:.3g}"
