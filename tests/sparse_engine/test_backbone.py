from __future__ import annotations

import pytest
import torch

from sparse_engine.backbone import Backbone, BackboneSpec, forward_layers
from sparse_engine.kwta import KWinners


def test_mlp_spec_lists_linear_layers() -> None:
    spec = BackboneSpec.parse("mlp:784-100-50")
    assert [layer.weight_shape for layer in spec.layers] == [(100, 784), (50, 100)]
    assert spec.features == 50
    assert str(spec) == "mlp:784-100-50"


def test_cnn_spec_pools_after_each_conv() -> None:
    spec = BackboneSpec.parse("cnn:1x28x28-c8-c16-32")
    kinds = [(layer.kind, layer.weight_shape, layer.out_shape) for layer in spec.layers]
    assert kinds == [
        ("conv", (8, 1, 3, 3), (8, 14, 14)),
        ("conv", (16, 8, 3, 3), (16, 7, 7)),
        ("linear", (32, 16 * 7 * 7), (32,)),
    ]


@pytest.mark.parametrize(
    "text",
    ["mlp", "rnn:784-10", "mlp:784", "mlp:784-abc", "mlp:1x28x28-10", "cnn:784-c8", "mlp:784-0"],
)
def test_malformed_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"backbone|mlp|cnn|layer"):
        BackboneSpec.parse(text)


def test_conv_after_linear_is_refused() -> None:
    with pytest.raises(ValueError, match="before the linear"):
        BackboneSpec.parse("cnn:1x28x28-32-c8")


def test_same_seed_gives_same_weights() -> None:
    a, b = (
        Backbone(BackboneSpec.parse("mlp:20-10"), seed=3),
        Backbone(BackboneSpec.parse("mlp:20-10"), seed=3),
    )
    assert torch.equal(a.weights[0], b.weights[0])


def test_masked_forward_ignores_weights_outside_the_mask() -> None:
    spec = BackboneSpec.parse("mlp:6-4")
    w = torch.randn(4, 6)
    mask = torch.rand(4, 6) < 0.5
    act = [KWinners(4, k=4, boost_strength=0.0).eval()]
    x = torch.randn(3, 6)
    noisy = torch.where(mask, w, torch.randn(4, 6))
    a = forward_layers(spec, x, [torch.where(mask, w, 0.0)], [torch.zeros(4)], act)
    b = forward_layers(spec, x, [torch.where(mask, noisy, 0.0)], [torch.zeros(4)], act)
    assert torch.equal(a, b)


def test_reinit_free_touches_only_free_weights() -> None:
    backbone = Backbone(BackboneSpec.parse("mlp:20-10"))
    before = backbone.weights[0].clone()
    free = torch.zeros(10, 20, dtype=torch.bool)
    free[:5] = True
    backbone.reinit_free([free], torch.Generator().manual_seed(9))
    assert torch.equal(backbone.weights[0][~free], before[~free])
    assert not torch.equal(backbone.weights[0][free], before[free])
