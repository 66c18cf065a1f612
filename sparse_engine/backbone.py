"""The shared backbone: its shape (a spec), its weights, and the masked forward pass.

The backbone holds one weight tensor per layer and no biases: biases, k-WTA state and
the head belong to each task. A task's effective weight is ``W ⊙ mask(t)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LayerKind = Literal["linear", "conv"]


@dataclass(frozen=True)
class LayerSpec:
    """One masked layer: a linear layer, or a 3×3 conv followed by 2×2 max-pooling."""

    kind: LayerKind
    weight_shape: tuple[int, ...]
    out_shape: tuple[int, ...]  # per-sample output shape, after pooling for conv

    @property
    def units(self) -> int:
        """Units one sample has at this layer's output (what k-WTA chooses among)."""
        return math.prod(self.out_shape)

    @property
    def numel(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def fan_in(self) -> int:
        return math.prod(self.weight_shape[1:])


@dataclass(frozen=True)
class BackboneSpec:
    """The backbone's architecture, written as a string such as ``mlp:784-1000-1000``.

    ``mlp:IN-H1-H2...`` is an MLP on flattened inputs of IN features;
    ``cnn:CxHxW-c32-c64-256`` is a CNN: ``cN`` tokens are 3×3 convs of N channels
    (each followed by 2×2 max-pooling), plain numbers are linear hidden layers.
    """

    kind: Literal["mlp", "cnn"]
    input_shape: tuple[int, ...]
    hidden: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        kind, sep, body = text.strip().partition(":")
        tokens = body.split("-") if sep else []
        if kind not in ("mlp", "cnn") or len(tokens) < 2:
            raise ValueError(
                f"backbone spec {text!r} must look like 'mlp:784-1000-1000' "
                "or 'cnn:1x28x28-c32-c64-256'"
            )
        try:
            input_shape = tuple(int(v) for v in tokens[0].split("x"))
        except ValueError:
            raise ValueError(f"backbone spec {text!r}: bad input shape {tokens[0]!r}") from None
        spec = cls(kind, input_shape, tuple(tokens[1:]))  # type: ignore[arg-type]
        spec.layers  # noqa: B018  (validates the hidden tokens)
        return spec

    def __str__(self) -> str:
        return f"{self.kind}:{'x'.join(map(str, self.input_shape))}-{'-'.join(self.hidden)}"

    def overall(self, per_layer: Sequence[float]) -> float:
        """A per-layer fraction of weights (density, free capacity) as the fraction of all
        the backbone's weights, each layer counting by its size: the one formula that the
        API, the progress events and the MLflow tags share."""
        sizes = [layer.numel for layer in self.layers]
        return sum(f * n for f, n in zip(per_layer, sizes, strict=True)) / sum(sizes)

    @cached_property
    def layers(self) -> tuple[LayerSpec, ...]:
        """The masked layers, in order (worked out once: inference asks on every call)."""
        shape = self.input_shape
        if self.kind == "mlp" and len(shape) != 1:
            raise ValueError(f"an mlp takes flat inputs, got input shape {shape}")
        if self.kind == "cnn" and len(shape) != 3:
            raise ValueError(f"a cnn takes C×H×W inputs, got input shape {shape}")
        layers: list[LayerSpec] = []
        for token in self.hidden:
            conv = token.startswith("c")
            try:
                width = int(token[1:] if conv else token)
            except ValueError:
                raise ValueError(f"backbone layer {token!r} is neither N nor cN") from None
            if width < 1:
                raise ValueError(f"backbone layer {token!r} must have at least one unit")
            if conv:
                if len(shape) != 3:
                    raise ValueError(f"conv layer {token!r} must come before the linear layers")
                c, h, w = shape
                if h < 2 or w < 2:
                    raise ValueError(f"conv layer {token!r} has no room to pool a {h}×{w} map")
                out: tuple[int, ...] = (width, h // 2, w // 2)
                layers.append(LayerSpec("conv", (width, c, 3, 3), out))
            else:
                fan_in = math.prod(shape)
                out = (width,)
                layers.append(LayerSpec("linear", (width, fan_in), out))
            shape = out
        return tuple(layers)

    @property
    def features(self) -> int:
        """Width of the last hidden layer, the input of every task's head."""
        return self.layers[-1].units


def init_weight(shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """Kaiming-uniform values, as ``nn.Linear``/``nn.Conv2d`` initialise their weights."""
    fan_in = math.prod(shape[1:])
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_ with a=sqrt(5)
    return torch.empty(*shape).uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def init_head(head: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """Draw a task head's values as ``nn.Linear`` does (weight, then bias, uniform in
    ±1/sqrt(features)) from ``generator``, so a task's seed regenerates them. Drawn on the
    generator's device (the CPU) and copied to the head's, so every device gets the same
    values."""
    bound = 1.0 / math.sqrt(head.in_features)
    if head.weight.device == generator.device:
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
        return head
    for p in (head.weight, head.bias):
        p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))
    return head


def forward_layers(
    spec: BackboneSpec,
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activations: Iterable[nn.Module],
) -> Tensor:
    """Run the hidden layers with the given effective weights; returns N × features."""
    h = x.reshape(x.shape[0], *spec.input_shape)
    for layer, w, b, act in zip(spec.layers, weights, biases, activations, strict=True):
        if layer.kind == "conv":
            h = F.max_pool2d(F.conv2d(h, w, b, padding=1), 2)
        else:
            h = F.linear(h.flatten(1), w, b)
        h = act(h)
    return h.flatten(1)


class Backbone(nn.Module):
    """The shared weights, one buffer per layer; only ``commit`` and ``reinit_free`` write them."""

    def __init__(self, spec: BackboneSpec, seed: int = 0) -> None:
        super().__init__()
        self.spec = spec
        generator = torch.Generator().manual_seed(seed)
        for i, layer in enumerate(spec.layers):
            self.register_buffer(f"weight{i}", init_weight(layer.weight_shape, generator))

    @property
    def weights(self) -> list[Tensor]:
        # from _buffers, not getattr: Module.__getattr__'s fallback was ~2 % of a served
        # one-example Predict; _buffers stays right when .to() replaces the tensors
        return [self._buffers[f"weight{i}"] for i in range(len(self.spec.layers))]  # type: ignore[misc]

    @torch.no_grad()
    def reinit_free(self, free: Sequence[Tensor], generator: torch.Generator) -> None:
        """Give every free weight a fresh initial value for the next task."""
        for w, f in zip(self.weights, free, strict=True):
            w[f] = init_weight(w.shape, generator)[f]
