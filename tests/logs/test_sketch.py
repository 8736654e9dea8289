"""LatencySketch: 1 % relative error at every rank, exact merges, weights, bounded bins."""

from __future__ import annotations

import math
import sys
from typing import List, Sequence

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.logs.sketch import LatencySketch

ACCURACY = 0.01
# Float noise in log/exp near a bin edge adds about 1e-13 to the relative error.
TOLERANCE = ACCURACY * (1 + 1e-9)
QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)
GAMMA = (1 + ACCURACY) / (1 - ACCURACY)

latencies = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-6, max_value=86400.0),
    st.floats(min_value=0.0, max_value=sys.float_info.max, allow_subnormal=False),
)
data_sets = st.lists(latencies, min_size=1, max_size=300)


def exact_quantile(data: Sequence[float], q: float) -> float:
    return sorted(data)[math.floor(q * (len(data) - 1))]


def sketch_of(data: Sequence[float], **kwargs) -> LatencySketch:
    sketch = LatencySketch(**kwargs)
    for value in data:
        sketch.add(value)
    return sketch


def assert_close(estimate: float, exact: float) -> None:
    assert abs(estimate - exact) <= TOLERANCE * exact, (estimate, exact)


def every_rank(n: int) -> List[float]:
    return [0.0] if n == 1 else [r / (n - 1) for r in range(n)]


def assert_same_sketch(a: LatencySketch, b: LatencySketch) -> None:
    assert (a.count, a.min, a.max, a.bin_count) == (b.count, b.min, b.max, b.bin_count)
    assert a.sum == pytest.approx(b.sum, rel=1e-9)
    for q in every_rank(a.count):
        assert a.quantile(q) == b.quantile(q)


@settings(max_examples=300)
@given(data_sets)
def test_every_quantile_is_within_one_percent_of_the_exact_rank(data):
    sketch = sketch_of(data)
    for q in QUANTILES:
        assert_close(sketch.quantile(q), exact_quantile(data, q))
    assert (sketch.count, sketch.min, sketch.max) == (len(data), min(data), max(data))


@given(data_sets, data_sets)
def test_merge_equals_the_sketch_of_the_concatenated_data(first, second):
    merged = sketch_of(first)
    merged.merge(sketch_of(second))
    assert_same_sketch(merged, sketch_of(first + second))


@given(st.lists(st.tuples(latencies, st.integers(min_value=1, max_value=50)), min_size=1, max_size=50))
def test_weighted_add_equals_repeated_add(pairs):
    weighted, repeated = LatencySketch(), LatencySketch()
    for value, count in pairs:
        weighted.add(value, count)
        for _ in range(count):
            repeated.add(value)
    assert_same_sketch(weighted, repeated)


def test_values_on_bin_edges_stay_within_the_error():
    # gamma**i is the upper edge of bin i: float rounding may put it one bin up.
    data = [GAMMA ** i for i in range(-700, 700)]
    sketch = sketch_of(data)
    for q in every_rank(len(data)):
        assert_close(sketch.quantile(q), exact_quantile(data, q))


def test_one_microsecond_to_one_day_fits_the_default_bound_without_collapsing():
    # ln(86400 / 1e-6) / ln(gamma) = 1259.07, so at most 1260 bins of 2048.
    assert math.log(86400 / 1e-6) / math.log(GAMMA) + 1 < 1261 <= LatencySketch().max_bins
    data, value = [], 1e-6
    while value <= 86400:  # steps of 0.1 %: every bin in the range gets values
        data.append(value)
        value *= 1.001
    data.append(86400.0)
    sketch = sketch_of(data)
    assert sketch.bin_count == 1260
    assert not sketch.collapsed
    for q in (0.001, 0.01, 0.1, 0.5, 0.99):
        assert_close(sketch.quantile(q), exact_quantile(data, q))


def test_empty_sketch():
    sketch = LatencySketch()
    assert sketch.quantile(0.5) is None
    assert (sketch.count, sketch.min, sketch.max, sketch.sum, sketch.bin_count) == (0, None, None, 0.0, 0)


def test_single_value_is_every_quantile_exactly():
    sketch = sketch_of([0.123])
    assert [sketch.quantile(q) for q in QUANTILES] == [0.123] * len(QUANTILES)


def test_all_zeros_use_no_bin():
    sketch = LatencySketch()
    sketch.add(0.0, 1000)
    assert [sketch.quantile(q) for q in QUANTILES] == [0.0] * len(QUANTILES)
    assert (sketch.bin_count, sketch.count, sketch.sum) == (0, 1000, 0.0)


def test_zeros_among_values_are_reported_as_zero():
    sketch = sketch_of([0.0] * 60 + [0.2] * 40)
    assert sketch.quantile(0.5) == 0.0
    assert_close(sketch.quantile(0.9), 0.2)


def test_subnormals_count_as_zero_but_min_stays_exact():
    sketch = sketch_of([5e-324, 1e-320, 1.0])
    assert sketch.bin_count == 1
    assert sketch.min == 5e-324
    assert sketch.quantile(0.5) == 5e-324  # clamped up to min, never below it


def test_huge_values_do_not_overflow():
    sketch = sketch_of([sys.float_info.max] * 3 + [1e308, 1.0])
    for q in QUANTILES:
        assert_close(sketch.quantile(q), exact_quantile([sys.float_info.max] * 3 + [1e308, 1.0], q))
    assert sketch.max == sys.float_info.max


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_invalid_values_are_rejected_and_change_nothing(bad):
    sketch = sketch_of([0.5])
    with pytest.raises(ValueError):
        sketch.add(bad)
    assert (sketch.count, sketch.sum, sketch.min, sketch.max, sketch.bin_count) == (1, 0.5, 0.5, 0.5, 1)


@pytest.mark.parametrize("count", [0, -3])
def test_count_below_one_is_rejected(count):
    sketch = LatencySketch()
    with pytest.raises(ValueError):
        sketch.add(0.5, count)
    assert sketch.count == 0


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_quantile_outside_zero_to_one_is_rejected(q):
    with pytest.raises(ValueError):
        sketch_of([1.0]).quantile(q)


@pytest.mark.parametrize("kwargs", [
    {"relative_accuracy": 0.0}, {"relative_accuracy": 1.0}, {"relative_accuracy": -0.1}, {"max_bins": 0},
])
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        LatencySketch(**kwargs)


def test_merge_requires_the_same_accuracy():
    sketch = sketch_of([1.0])
    with pytest.raises(ValueError):
        sketch.merge(sketch_of([1.0], relative_accuracy=0.02))
    assert sketch.count == 1


def test_merge_with_empty_sketches():
    empty = LatencySketch()
    empty.merge(LatencySketch())
    assert empty.count == 0 and empty.quantile(0.5) is None

    full = sketch_of([0.1, 0.2, 0.3])
    full.merge(LatencySketch())
    assert_same_sketch(full, sketch_of([0.1, 0.2, 0.3]))

    into_empty = LatencySketch()
    into_empty.merge(sketch_of([0.1, 0.2, 0.3]))
    assert_same_sketch(into_empty, sketch_of([0.1, 0.2, 0.3]))


def test_merge_leaves_the_other_sketch_alone_even_when_it_is_itself():
    sketch = sketch_of([0.1, 0.2])
    sketch.merge(sketch)
    assert_same_sketch(sketch, sketch_of([0.1, 0.2, 0.1, 0.2]))


def test_copy_is_independent():
    original = sketch_of([0.1, 0.2])
    clone = original.copy()
    clone.add(5.0)
    assert (original.count, original.max, original.bin_count) == (2, 0.2, 2)
    assert (clone.count, clone.max, clone.bin_count) == (3, 5.0, 3)


def test_collapse_keeps_the_high_quantiles_and_coarsens_the_low_ones():
    data = [1e-3 * 1.05 ** k for k in range(1000)]  # one value per bin, 1000 bins
    sketch = sketch_of(data, max_bins=100)
    assert sketch.bin_count == 100 and sketch.collapsed
    assert (sketch.count, sketch.min, sketch.max) == (1000, data[0], data[-1])
    # The top 99 bins hold ranks 901..999 exactly as before.
    for q in (0.91, 0.95, 0.99, 1.0):
        assert_close(sketch.quantile(q), exact_quantile(data, q))
    # Ranks 1..900 share the floor bin: reported near rank 900, far too high.
    assert sketch.quantile(0.5) > 100 * exact_quantile(data, 0.5)
    assert sketch.quantile(0.0) == data[0]


@given(data_sets, data_sets, st.integers(min_value=1, max_value=12))
def test_a_collapsed_sketch_stays_bounded_and_never_underestimates(first, second, max_bins):
    a = sketch_of(first, max_bins=max_bins)
    b = sketch_of(second, max_bins=max_bins)
    a.merge(b)
    data = first + second
    assert a.bin_count <= max_bins and b.bin_count <= max_bins
    assert (a.count, a.min, a.max) == (len(data), min(data), max(data))
    for q in QUANTILES:
        # Collapsing moves values up into the floor bin, never down.
        assert a.quantile(q) >= exact_quantile(data, q) * (1 - TOLERANCE)


def test_adding_below_the_floor_after_a_collapse_uses_no_new_bin():
    sketch = sketch_of([10.0, 20.0, 40.0], max_bins=2)
    assert sketch.bin_count == 2
    sketch.add(1e-6, 5)
    assert sketch.bin_count == 2 and sketch.count == 8 and sketch.min == 1e-6
    assert_close(sketch.quantile(1.0), 40.0)


# --- count_at_most (histogram buckets) ---------------------------------------------------------

BOUNDS = (0.0, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


@given(data_sets)
def test_count_at_most_counts_every_value_up_to_the_bound_and_only_those_within_its_bin_above(data):
    sketch = sketch_of(data)
    previous = 0
    for bound in BOUNDS + tuple(sorted(set(data))):
        counted = sketch.count_at_most(bound)
        at_most = sum(1 for v in data if v <= bound)
        # Above the bound, only values sharing its bin (below bound * gamma) may be counted.
        near = sum(1 for v in data if bound < v < bound * GAMMA * (1 + 1e-9))
        assert at_most <= counted <= at_most + near, (bound, counted, at_most, near)
    for bound in sorted(BOUNDS + tuple(data)):
        counted = sketch.count_at_most(bound)
        assert counted >= previous  # non-decreasing: histogram buckets are cumulative
        previous = counted


def test_count_at_most_is_exact_away_from_the_bound_and_at_the_ends():
    data = [0.0, 0.0, 0.003, 0.004, 0.007, 0.02, 0.02, 0.2, 0.3, 1.7, 7.0]
    sketch = sketch_of(data)
    for bound in BOUNDS:
        assert sketch.count_at_most(bound) == sum(1 for v in data if v <= bound), bound
    assert sketch.count_at_most(-1.0) == 0
    assert sketch.count_at_most(math.inf) == len(data)
    assert sketch.count_at_most(7.0) == len(data)  # from max on: exact
    assert LatencySketch().count_at_most(1.0) == 0


def test_count_at_most_counts_a_value_equal_to_the_bound():
    # nginx logs milliseconds, so latencies of exactly 0.005 or 0.1 s are common bucket bounds.
    for bound in (0.001, 0.005, 0.01, 0.1, 0.25, 1.0):
        sketch = sketch_of([bound / 2, bound, bound * 4])
        assert sketch.count_at_most(bound) == 2, bound


def test_count_at_most_within_the_bin_of_the_bound_counts_values_just_above_it():
    sketch = sketch_of([0.1, 0.1 * (1 + ACCURACY / 2), 0.5])
    assert sketch.count_at_most(0.1) in (1, 2)
    assert sketch.count_at_most(0.1 * GAMMA * 1.001) == 2


def test_count_at_most_after_a_collapse_counts_the_floor_bin_at_its_upper_edge():
    sketch = sketch_of([1e-6, 1e-5, 10.0, 20.0, 40.0], max_bins=2)
    assert sketch.collapsed
    # Two bins: 1e-6 .. 20.0 went up into the floor bin (20.0's), so nothing counts below it.
    for bound in (1e-6, 1e-4, 10.0, 15.0):
        assert sketch.count_at_most(bound) == 0, bound
    assert sketch.count_at_most(20.0) == 4
    assert sketch.count_at_most(30.0) == 4
    assert sketch.count_at_most(40.0) == 5


def test_count_at_most_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        sketch_of([1.0]).count_at_most(math.nan)
