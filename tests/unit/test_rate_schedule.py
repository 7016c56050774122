"""The rate mode's send schedule: a pure function of its settings (no clock, no I/O)."""

from __future__ import annotations

import math
import statistics

import pytest

from benchmark.core.patterns import RateSchedule, arrival_offsets, step_seed


def gaps_s(offsets) -> list[float]:
    return [(b - a) / 1e9 for a, b in zip(offsets, offsets[1:])]


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def test_poisson_gaps_have_the_rate_and_a_coefficient_of_variation_of_one():
    offsets = arrival_offsets(RateSchedule(rate=100, arrivals="poisson", seed=1, requests=20_000))
    gaps = gaps_s(offsets)
    assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.03)
    assert cv(gaps) == pytest.approx(1.0, abs=0.05)


def test_constant_gaps_are_even():
    offsets = arrival_offsets(RateSchedule(rate=250, arrivals="constant", seed=1, duration_s=2))
    gaps = gaps_s(offsets)
    assert len(offsets) == 499  # 4 ms, 8 ms, ... 1,996 ms: the next one would be at 2 s
    assert offsets[0] == 4_000_000
    assert max(gaps) - min(gaps) < 2e-9
    assert cv(gaps) < 1e-6


@pytest.mark.parametrize("shape", [0.25, 4.0])
def test_gamma_gaps_have_the_rate_and_the_spread_of_their_shape(shape):
    offsets = arrival_offsets(RateSchedule(rate=50, arrivals="gamma", burstiness=shape, seed=3,
                                           requests=20_000))
    gaps = gaps_s(offsets)
    assert statistics.fmean(gaps) == pytest.approx(0.02, rel=0.05)
    assert cv(gaps) == pytest.approx(1 / math.sqrt(shape), rel=0.08)


def test_gamma_of_shape_one_is_poisson_in_distribution():
    gaps = gaps_s(arrival_offsets(RateSchedule(rate=10, arrivals="gamma", burstiness=1.0,
                                               seed=5, requests=20_000)))
    assert cv(gaps) == pytest.approx(1.0, abs=0.05)


def test_the_same_seed_replays_the_same_schedule_and_another_seed_does_not():
    settings = dict(rate=37.5, arrivals="poisson", duration_s=20)
    first = arrival_offsets(RateSchedule(seed=42, **settings))
    assert arrival_offsets(RateSchedule(seed=42, **settings)) == first
    assert arrival_offsets(RateSchedule(seed=43, **settings)) != first
    assert step_seed(42, 1) != step_seed(42, 2)
    assert step_seed(42, 2) == step_seed(42, 2)


def test_both_bounds_apply_and_every_time_is_inside_the_duration():
    by_count = arrival_offsets(RateSchedule(rate=1000, seed=1, duration_s=10, requests=50))
    assert len(by_count) == 50
    by_time = arrival_offsets(RateSchedule(rate=100, seed=1, duration_s=3, requests=10_000))
    assert 240 < len(by_time) < 360
    assert all(0 < t < 3_000_000_000 for t in by_time)
    assert list(by_time) == sorted(by_time)


def test_ramp_up_grows_the_rate_linearly_then_holds_it():
    offsets = arrival_offsets(RateSchedule(rate=200, arrivals="poisson", seed=9, duration_s=40,
                                           ramp_up_s=20))
    per_4s = [sum(1 for t in offsets if k * 4e9 <= t < (k + 1) * 4e9) for k in range(10)]
    # Expected during the ramp: 200 req/s * (mean fraction of the ramp) * 4 s = 80, 240, 400,
    # 560, 720; after it, 800 every 4 s.
    for got, expected in zip(per_4s, [80, 240, 400, 560, 720, 800, 800, 800, 800, 800]):
        assert abs(got - expected) < 5 * math.sqrt(expected)
    # In all: half the ramp's length is lost, 200 * (40 - 10) expected.
    assert abs(len(offsets) - 6000) < 5 * math.sqrt(6000)


def test_constant_arrivals_under_a_ramp_stay_in_step_with_the_expected_count():
    offsets = arrival_offsets(RateSchedule(rate=10, arrivals="constant", seed=0, duration_s=10,
                                           ramp_up_s=4))
    # 10 * (10 - 2) = 80 expected arrivals; the k-th at the time when 10 * u = k.
    assert len(offsets) == 79
    gaps = gaps_s(offsets)
    assert gaps[0] > gaps[-1]  # wider gaps while the rate is low
    assert gaps[-1] == pytest.approx(0.1)


def test_a_schedule_needs_a_bound_and_a_positive_rate():
    with pytest.raises(ValueError):
        arrival_offsets(RateSchedule(rate=10))
    with pytest.raises(ValueError):
        arrival_offsets(RateSchedule(rate=0, requests=3))
