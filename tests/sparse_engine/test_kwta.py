from __future__ import annotations

import pytest
import torch

from sparse_engine.kwta import KWinners, auto_k, kwinners, resolve_k


def test_exactly_k_units_nonzero_per_sample() -> None:
    x = torch.randn(32, 100)
    out = kwinners(x, torch.zeros(100), k=7, boost_strength=0.0)
    assert torch.equal((out != 0).sum(1), torch.full((32,), 7))


def test_winners_keep_their_original_values_and_are_the_largest() -> None:
    x = torch.randn(8, 50)
    out = kwinners(x, torch.zeros(50), k=5, boost_strength=0.0)
    top = x.topk(5, dim=1)
    assert torch.equal(out.gather(1, top.indices), top.values)


def test_conv_maps_choose_k_over_channels_and_positions() -> None:
    x = torch.randn(4, 3, 5, 5)
    out = KWinners(75, k=10).eval()(x)
    assert out.shape == x.shape
    assert torch.equal((out != 0).flatten(1).sum(1), torch.full((4,), 10))


def test_boost_favours_units_with_low_duty_cycle() -> None:
    x = torch.ones(1, 4)  # a tie, broken only by boosting
    duty = torch.tensor([0.9, 0.9, 0.0, 0.9])
    out = kwinners(x, duty, k=1, boost_strength=2.0)
    assert out[0].nonzero().flatten().tolist() == [2]


def test_duty_cycle_follows_the_nupic_update_rule() -> None:
    layer = KWinners(6, k=2, duty_cycle_period=10).train()
    x = torch.tensor([[5.0, 4.0, 0.0, 0.0, 0.0, 0.0]] * 2)
    layer(x)
    expected = torch.tensor([2.0, 2.0, 0, 0, 0, 0]) / 2  # period = min(10, 2 seen)
    assert torch.allclose(layer.duty_cycle, expected)


def test_duty_cycle_is_frozen_in_eval_mode() -> None:
    layer = KWinners(6, k=2).eval()
    layer(torch.randn(3, 6))
    assert torch.equal(layer.duty_cycle, torch.zeros(6))


def test_boost_strength_decays_by_its_factor() -> None:
    layer = KWinners(10, k=2, boost_strength=1.5, boost_strength_factor=0.5)
    layer.update_boost_strength()
    assert layer.boost_strength == pytest.approx(0.75)


def test_state_round_trip_gives_identical_outputs() -> None:
    layer = KWinners(20, k=0.25, boost_strength=1.0).train()
    for _ in range(3):
        layer(torch.randn(16, 20))
    x = torch.randn(5, 20)
    assert torch.equal(layer.eval()(x), KWinners.from_state(layer.state())(x))


@pytest.mark.parametrize(("k", "units", "count"), [(0.1, 100, 10), (3, 100, 3), (1.0, 7, 7)])
def test_k_is_a_count_or_a_fraction(k: float, units: int, count: int) -> None:
    assert resolve_k(k, units) == count


@pytest.mark.parametrize("k", [0, 101, 0.0, 1.5, -0.1])
def test_k_out_of_range_is_refused(k: float) -> None:
    with pytest.raises(ValueError, match="k"):
        resolve_k(k, 100)


@pytest.mark.parametrize(
    ("units", "k"),
    [(10, 5), (49, 24), (64, 32), (100, 40), (300, 69), (1000, 126), (2000, 179), (10000, 500)],
)
def test_auto_k_keeps_about_4_sqrt_units_winners_within_5_and_50_percent(
    units: int, k: int
) -> None:
    """The rule measured in benchmarks/sizes.py: round(clamp(4/√n, 5 %, 50 %)·n)."""
    assert auto_k(units) == k
    assert resolve_k("auto", units) == k
    assert KWinners(units, "auto").k == k


def test_auto_k_is_at_least_one_winner_and_at_most_every_unit() -> None:
    assert [auto_k(n) for n in (1, 2, 3)] == [1, 1, 2]


def test_k_that_is_neither_a_number_nor_auto_is_refused() -> None:
    with pytest.raises(ValueError, match="a count, a fraction or 'auto'"):
        resolve_k("most", 10)  # type: ignore[arg-type]
