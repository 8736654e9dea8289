"""Series points added up into time slices for drawing."""

from __future__ import annotations

from nginx_canary.report.bins import bin_points


def point(t: float, canary: dict, stable: dict) -> dict:
    return {"time": t, "canary": canary, "stable": stable}


def test_counts_are_added_so_rates_stay_exact_and_the_largest_p99_is_kept():
    points = [point(1, {"requests": 10, "errors_5xx": 1, "p99": 0.2}, {"requests": 30, "errors_5xx": 0, "p99": 0.1}),
              point(2, {"requests": 30, "errors_5xx": 1, "p99": 0.5}, {"requests": 10, "errors_5xx": 2, "p99": None})]
    [slot] = bin_points(points, 0.0, 2.0, max_bins=1)
    assert slot.time == 1.0
    assert slot.rate("canary") == 2 / 40 and slot.rate("stable") == 2 / 40
    assert slot.p99("canary") == 0.5 and slot.p99("stable") == 0.1
    assert slot.share() == 0.5


def test_at_most_max_bins_and_empty_slices_left_out():
    points = [point(t, {"requests": 1}, {"requests": 1}) for t in range(0, 1000, 10)]
    bins = bin_points(points, 0.0, 2000.0, max_bins=40)
    assert len(bins) == 20 and [b.time for b in bins] == sorted(b.time for b in bins)


def test_odd_figures_count_as_nothing():
    points = [point(1, {"requests": True, "errors_5xx": "3", "p99": "nan"}, "not a dict"), {"time": "x"}]
    [slot] = bin_points(points, 0.0, 2.0)
    assert slot.rate("canary") is None and slot.p99("canary") is None and slot.share() is None
    assert bin_points([{"time": None}], 0.0, 1.0) == []
