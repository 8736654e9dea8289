"""The demo app's latency model: a seeded, capped lognormal long tail that a scale factor stretches."""

from __future__ import annotations

import statistics

import pytest

from nginx_canary.demo.latency import TAIL_CAP, LatencyModel, lognormal_sigma

DRAWS = 20_000


def quantiles(draws: list) -> tuple:
    ordered = sorted(draws)
    return statistics.median(ordered), ordered[int(0.99 * len(ordered)) - 1], ordered[-1]


def test_median_and_p99_are_the_configured_ones():
    model = LatencyModel(seed=7)
    median, p99, top = quantiles([model.draw(median=0.02, p99=0.1) for _ in range(DRAWS)])
    assert 0.019 <= median <= 0.021
    assert 0.09 <= p99 <= 0.11
    assert top <= TAIL_CAP * 0.1


def test_a_few_ms_to_tens_of_ms_with_a_long_tail():
    model = LatencyModel(seed=1)
    draws = sorted(model.draw(median=0.02, p99=0.1) for _ in range(DRAWS))
    assert draws[int(0.05 * DRAWS)] < 0.01 and draws[int(0.999 * DRAWS)] > 0.15


def test_the_same_seed_gives_the_same_delays():
    first, second, other = LatencyModel(seed=3), LatencyModel(seed=3), LatencyModel(seed=4)
    a = [first.draw(0.001, 0.002, 0.02, 0.1) for _ in range(100)]
    assert a == [second.draw(0.001, 0.002, 0.02, 0.1) for _ in range(100)]
    assert a != [other.draw(0.001, 0.002, 0.02, 0.1) for _ in range(100)]


def test_the_scale_multiplies_every_quantile():
    base, slow = LatencyModel(seed=5), LatencyModel(seed=5)
    pairs = [(base.draw(0.001, 0.0, 0.02, 0.1), slow.draw(0.001, 0.0, 0.02, 0.1, scale=3.0)) for _ in range(DRAWS)]
    assert all(s == pytest.approx(3 * b) for b, s in pairs)
    median, p99, _ = quantiles([s for _, s in pairs])
    assert 0.060 <= median <= 0.066 and 0.27 <= p99 <= 0.33


def test_every_draw_is_capped():
    model = LatencyModel(seed=0)
    # A p99 1000x the median: about 1 draw in 500 would exceed 5x the p99 uncapped.
    draws = [model.draw(median=0.001, p99=1.0) for _ in range(DRAWS)]
    assert max(draws) == TAIL_CAP * 1.0 and min(draws) > 0


def test_fixed_and_jitter_parts_without_a_tail():
    model = LatencyModel(seed=2)
    assert model.draw(0.05) == 0.05
    draws = [model.draw(0.05, 0.01) for _ in range(1000)]
    assert all(0.05 <= d <= 0.06 for d in draws)


def test_no_p99_means_five_times_the_median():
    assert lognormal_sigma(0.02, 0.1) == pytest.approx(0.6918, abs=1e-4)
    model = LatencyModel(seed=9)
    _, p99, _ = quantiles([model.draw(median=0.02) for _ in range(DRAWS)])
    assert 0.09 <= p99 <= 0.11


@pytest.mark.parametrize("median, p99", [(0.0, 0.1), (0.1, 0.05), (-0.01, 0.1)])
def test_a_p99_below_the_median_or_no_median_is_refused(median, p99):
    with pytest.raises(ValueError, match="median"):
        lognormal_sigma(median, p99)
