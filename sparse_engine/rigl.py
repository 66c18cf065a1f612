"""Dynamic sparse training, RigL-style (Evci et al. 2020): a task's subnetwork without a
dense phase.

The mask starts random at ``density`` of each layer (among free and earlier tasks'
weights, as pruning chooses). Every ``rigl_interval`` optimizer steps of the first
``epochs``, each layer drops the lowest-magnitude fraction of the task's own kept free
weights and regrows as many free weights where the dense gradient is largest (regrown
weights start at zero), so every layer keeps its size. The fraction follows a cosine decay
from ``rigl_drop_fraction`` to 0. Earlier tasks' weights in the mask are read, never
dropped, never regrown (only free weights are), never written. ``retrain_epochs`` then
train with the mask fixed. With ``epochs="auto"`` the drop fraction decays over
``max_epochs`` and the phase keeps its best epoch's mask and values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .recipe import Run
from .saliency import keep_count, top_mask


def drop_fraction(step: int, end: int, initial: float) -> float:
    """Cosine-decayed drop fraction at ``step`` of ``end`` (Evci et al. 2020, eq. 1)."""
    if step >= end:
        return 0.0
    return initial / 2 * (1 + math.cos(math.pi * step / end))


def random_mask(
    shape: torch.Size, keep: int, generator: torch.Generator, candidates: Tensor | None = None
) -> Tensor:
    """``keep`` positions drawn uniformly at random (among ``candidates``), as a bool mask."""
    score = torch.rand(shape, generator=generator)
    allowed = torch.ones(shape, dtype=torch.bool) if candidates is None else candidates.cpu()
    return top_mask(score, allowed, keep)


@torch.no_grad()
def update_mask(
    mask: Tensor, free: Tensor, weight: Tensor, grad: Tensor, fraction: float
) -> tuple[Tensor, Tensor]:
    """One RigL step on one layer: drop ``fraction`` of the kept free weights with the
    smallest |weight|, regrow as many free weights outside the mask with the largest
    |grad|. Returns (new mask, regrown positions); the mask keeps its size."""
    own = mask & free
    n = round(fraction * int(own.sum()))
    if n == 0:
        return mask.clone(), torch.zeros_like(mask)
    dropped = _top(-weight.abs(), own, n)
    after = mask & ~dropped
    candidates = free & ~after  # the dropped ones may come back
    grown = _top(grad.abs(), candidates, n)
    return after | grown, grown & ~dropped


def _top(score: Tensor, candidates: Tensor, n: int) -> Tensor:
    """The ``n`` highest-scoring candidates (n <= their count) as a bool mask; torch.topk
    rather than a full sort, as this runs every ``rigl_interval`` steps."""
    masked = torch.where(candidates, score, score.new_full((), float("-inf")))
    top = torch.topk(masked.flatten(), n, sorted=False).indices
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    mask[top] = True
    return mask.reshape(score.shape)


def learn_rigl(run: Run) -> None:
    """Random sparse mask → sparse training with drop/regrow updates → fixed-mask training."""
    config, net = run.config, run.trainer
    free = [~o for o in net.owned]
    net.set_masks(
        [
            random_mask(c.shape, keep_count(config.density, c.numel()), run.generator, a).to(
                c.device
            )
            for c, a in zip(net.constants, net.candidates, strict=True)
        ]
    )
    # auto epochs: the drop fraction decays over max_epochs periods, the most the phase may run
    end = config.bound(config.epochs, run.steps_per_epoch()) * run.steps_per_epoch()

    def step(at: int, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer) -> None:
        if at % config.rigl_interval or at >= end:
            return
        fraction = drop_fraction(at, end, config.rigl_drop_fraction)
        net.eval()  # no k-WTA duty-cycle update from this extra pass
        leaves = [w.detach().clone().requires_grad_(True) for w in net.weights()]
        loss = F.cross_entropy(net.forward_with(leaves, x), y)
        grads = torch.autograd.grad(loss, leaves)
        net.train()
        masks, moved = [], 0
        for i, (m, f, p, g) in enumerate(zip(net.masks, free, net.free, grads, strict=True)):
            new, grown = update_mask(m, f, p.detach(), g, fraction)
            with torch.no_grad():
                p[grown] = 0.0
            for buffer in optimizer.state.get(p, {}).values():
                if isinstance(buffer, Tensor) and buffer.shape == p.shape:
                    buffer[grown] = 0.0  # no stale momentum for a regrown weight
            moved += int(grown.sum())
            masks.append(new)
            run.history.append({"phase": "rigl", "layer": i, "step": at, "kept": int(new.sum())})
        net.set_masks(masks)
        run.history.append(
            {
                "phase": "rigl",
                "step": at,
                "drop_fraction": fraction,
                "moved": moved,
                "density": net.density(),
            }
        )

    run.fit("train", config.epochs, after_step=step)
    run.fit("retrain", config.retrain_epochs)
