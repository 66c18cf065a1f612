"""The network of the task being learned: backbone constants plus its own trainable parts.

Nothing here writes the backbone. Weights owned by earlier tasks enter the forward pass
as constants; the task trains its own copy of the free weights (``free`` below), whose
values at owned positions are never read, so no gradient, momentum or weight decay can
reach an owned weight. The model commits the result afterwards.

The trainer lives on its ``device`` (device.py): its copies of the backbone, masks, k-WTA
state and head are made there; random draws still come from the CPU generator, so a seed
gives the same initial values on every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import structured
from .backbone import Backbone, forward_layers, init_head, init_weight
from .config import TaskConfig
from .data import TaskData
from .device import module_device
from .kwta import KWinners, KWinnersState, resolve_k

EVAL_BATCH = 1024


@dataclass(frozen=True)
class Checkpoint:
    """Everything an epoch changes in the task being learned: its trainable values
    (``snapshot``), its masks (RigL and supermasks move them) and the k-WTA boost state with
    each layer's count of examples seen."""

    values: list[Tensor]
    masks: list[Tensor]
    kwta: list[tuple[KWinnersState, int]]


class TaskTrainer(nn.Module):
    """The network of the task being learned: backbone constants + its own trainable parts.

    ``candidates``: per layer, the weights the task's mask may ever cover (free ones and
    those of the earlier tasks it may read, ``reuse.candidates``); None = every weight. The
    mask starts as them and every method chooses within them, so no other weight is read."""

    def __init__(
        self,
        backbone: Backbone,
        owned: Sequence[Tensor],
        classes: int,
        config: TaskConfig,
        generator: torch.Generator,
        device: torch.device | None = None,
        candidates: Sequence[Tensor] | None = None,
    ) -> None:
        super().__init__()
        spec = backbone.spec
        self.spec = spec
        self.device = device = torch.device("cpu") if device is None else device
        self.owned = [o.to(device, copy=True) for o in owned]
        self.constants = [w.detach().to(device, copy=True) for w in backbone.weights]
        self.free = nn.ParameterList(nn.Parameter(w.clone()) for w in self.constants)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(layer.out_shape[0], device=device)) for layer in spec.layers
        )
        ks = config.k_per_layer(len(spec.layers))
        self.kwta = nn.ModuleList(
            KWinners(
                layer.units,
                k,
                boost_strength=config.boost_strength,
                boost_strength_factor=config.boost_strength_factor,
                duty_cycle_period=config.duty_cycle_period,
            )
            for layer, k in zip(spec.layers, ks, strict=True)
        ).to(device)
        self.head = init_head(nn.Linear(spec.features, classes), generator).to(device)
        self.initial = [p.detach().clone() for p in self.parameters()]
        self.candidates = (
            [torch.ones_like(o) for o in self.owned]
            if candidates is None
            else [c.to(device, copy=True) for c in candidates]
        )
        self.set_masks(self.candidates)
        # structured pruning: kept rows (units or channels) per layer; all until pruned
        self.units = [
            torch.ones(layer.weight_shape[0], dtype=torch.bool, device=device)
            for layer in spec.layers
        ]
        self.k_config = ks

    def restrict_units(self, units: Sequence[Tensor]) -> None:
        """Only the kept ``units`` may be active: each k-WTA picks among them, with a
        fractional k taken of the kept units (a count must fit them)."""
        self.units = [u.clone() for u in units]
        for layer, kwta, rows, k in zip(
            self.spec.layers, self.kwta, self.units, self.k_config, strict=True
        ):
            kept = int(rows.sum()) * structured.row_units(layer)
            kwta.restrict(rows, resolve_k(k, kept))  # type: ignore[operator]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates (every parameter that requires a gradient)."""
        return [p for p in self.parameters() if p.requires_grad]

    def set_masks(self, masks: Sequence[Tensor]) -> None:
        """Restrict the subnetwork to ``masks``; the trainable part is mask ∩ free."""
        self.masks = [m.clone() for m in masks]
        self.trainable = [m & ~o for m, o in zip(self.masks, self.owned, strict=True)]
        zero = torch.zeros((), device=self.device)
        self.fixed = [
            torch.where(m & o, c, zero)
            for m, o, c in zip(self.masks, self.owned, self.constants, strict=True)
        ]

    def weights(self) -> list[Tensor]:
        """Effective weights: mask ⊙ (owned constants where owned, own values where free)."""
        return [
            torch.where(t, p, f)
            for t, p, f in zip(self.trainable, self.free, self.fixed, strict=True)
        ]

    def forward_with(self, weights: Sequence[Tensor], x: Tensor) -> Tensor:
        return self.head(forward_layers(self.spec, x, weights, list(self.biases), self.kwta))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with(self.weights(), x)

    @torch.no_grad()
    def rewind(self) -> None:
        """Lottery-ticket rewinding: every trainable value back to its value at task start."""
        self.restore(self.initial)

    def snapshot(self) -> list[Tensor]:
        """A copy of every trainable value (free weights, biases, head), for late rewinding."""
        return [p.detach().clone() for p in self.parameters()]

    @torch.no_grad()
    def restore(self, values: Sequence[Tensor]) -> None:
        """Set every trainable value to ``values`` (a ``snapshot``); owned weights are
        never read from ``free``, so this cannot reach them."""
        for p, v in zip(self.parameters(), values, strict=True):
            p.copy_(v)

    def checkpoint(self) -> Checkpoint:
        """A copy of the iterate (see ``Checkpoint``), to come back to with ``resume``."""
        return Checkpoint(
            self.snapshot(),
            [m.clone() for m in self.masks],
            [(layer.state(), layer.learning_iterations) for layer in self.kwta],  # type: ignore[operator,misc]
        )

    def resume(self, checkpoint: Checkpoint) -> None:
        """Back to a ``checkpoint``'s iterate: values, masks and k-WTA boost state."""
        self.restore(checkpoint.values)
        self.set_masks(checkpoint.masks)
        for layer, (state, iterations) in zip(self.kwta, checkpoint.kwta, strict=True):
            layer.resume(state, iterations)  # type: ignore[operator]

    @torch.no_grad()
    def reinit(self, generator: torch.Generator) -> None:
        """Liu et al. 2019: fresh random values (same distribution as the backbone's
        initialisation) for the kept free weights, a fresh head, zero biases."""
        for p, t in zip(self.free, self.trainable, strict=True):
            p[t] = init_weight(p.shape, generator).to(p.device)[t]
        for b in self.biases:
            b.zero_()
        init_head(self.head, generator)

    @torch.no_grad()
    def sign_constant(self) -> list[float]:
        """Zhou et al. 2019: each kept free weight becomes sign(initial value) × the layer's
        constant (std of the layer's initial free values); biases and head are rewound.
        Returns the per-layer constants."""
        free_count = len(self.free)
        constants = []
        for i, (p, t, o) in enumerate(zip(self.free, self.trainable, self.owned, strict=True)):
            start = self.initial[i]
            c = float(start[~o].std()) if int((~o).sum()) > 1 else float(start.abs().mean())
            signs = torch.where(start >= 0, 1.0, -1.0)
            p[t] = (signs * c)[t]
            constants.append(c)
        for p, v in zip(
            list(self.parameters())[free_count:], self.initial[free_count:], strict=True
        ):
            p.copy_(v)
        return constants

    def density(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks)
        return kept / sum(m.numel() for m in self.masks)


def make_optimizer(params: list[nn.Parameter], config: TaskConfig) -> torch.optim.Optimizer:
    """The config's optimizer; fused (one kernel over all parameters: about 5× less CPU per
    step than PyTorch's default per-tensor loop on CPU, the same update rule)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=True,
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


@torch.no_grad()
def accuracy(net: nn.Module, data: TaskData, targets: Tensor) -> float:
    """Fraction of ``data`` whose arg-max output equals ``targets`` (class indices), run
    on the network's device a chunk at a time."""
    was_training = net.training
    net.eval()
    device = module_device(net)
    correct = 0
    for start in range(0, len(data), EVAL_BATCH):
        logits = net(data.x[start : start + EVAL_BATCH].to(device))
        chunk = targets[start : start + EVAL_BATCH].to(device)
        correct += int((logits.argmax(1) == chunk).sum())
    net.train(was_training)
    return correct / len(data)
