"""Stats and WindowedStats: counts, summaries, sliding buckets, marks, key folding, bounded memory."""

from __future__ import annotations

import math
import random
from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.logs.window import OTHER_KEY, Stats, WindowedStats

SUMMARY_KEYS = {"requests", "errors_5xx", "errors_4xx", "error_rate", "p50", "p90", "p95", "p99", "max"}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def windowed(horizon: int = 10, max_keys: int = 4096, now: float = 1_000_000.0) -> Tuple[WindowedStats, FakeClock]:
    clock = FakeClock(now)
    return WindowedStats(horizon_seconds=horizon, clock=clock, max_keys=max_keys), clock


# --- Stats -----------------------------------------------------------------


def test_stats_classify_statuses():
    stats = Stats()
    for status in (200, 301, 404, 499, 500, 503, 599, None):
        stats.add(status, 0.01)
    stats.add(502, None, count=3)
    assert (stats.requests, stats.errors_5xx, stats.errors_4xx) == (11, 6, 2)
    assert stats.latency.count == 8  # the None latencies add no sample


def test_summary_has_exactly_the_documented_keys_and_figures():
    stats = Stats()
    stats.add(200, 0.1234567, count=3)
    stats.add(500, 0.1234567)
    summary = stats.summary()
    assert set(summary) == SUMMARY_KEYS
    assert (summary["requests"], summary["errors_5xx"], summary["errors_4xx"]) == (4, 1, 0)
    assert summary["error_rate"] == 0.25
    # one distinct value: every quantile is the exact min/max, rounded to µs
    assert [summary[k] for k in ("p50", "p90", "p95", "p99", "max")] == [0.123457] * 5


def test_summary_of_nothing():
    summary = Stats().summary()
    assert set(summary) == SUMMARY_KEYS
    assert summary == {
        "requests": 0, "errors_5xx": 0, "errors_4xx": 0, "error_rate": 0.0,
        "p50": None, "p90": None, "p95": None, "p99": None, "max": None,
    }


def test_summary_without_latencies_has_counts_but_no_percentiles():
    stats = Stats()
    stats.add(503, None, count=2)
    summary = stats.summary()
    assert (summary["requests"], summary["error_rate"], summary["p99"], summary["max"]) == (2, 1.0, None, None)


def test_summary_percentiles_follow_the_sketch():
    stats = Stats()
    for ms in range(1, 101):
        stats.add(200, ms / 1000)
    summary = stats.summary()
    for name, exact in (("p50", 0.050), ("p90", 0.090), ("p95", 0.095), ("p99", 0.099), ("max", 0.100)):
        assert summary[name] == pytest.approx(exact, rel=0.0101)


@pytest.mark.parametrize("status, seconds, count", [(200, -1.0, 1), (200, math.nan, 1), (200, 0.1, 0), (None, None, -1)])
def test_stats_reject_invalid_events_without_counting_them(status, seconds, count):
    stats = Stats()
    with pytest.raises(ValueError):
        stats.add(status, seconds, count)
    assert (stats.requests, stats.errors_5xx, stats.errors_4xx, stats.latency.count) == (0, 0, 0, 0)


def test_stats_merge_and_copy():
    a, b = Stats(), Stats()
    a.add(200, 0.1)
    b.add(500, 0.3, count=2)
    b.add(404, None)
    clone = a.copy()
    a.merge(b)
    assert (a.requests, a.errors_5xx, a.errors_4xx, a.latency.count, a.latency.max) == (4, 2, 1, 3, 0.3)
    assert (b.requests, b.latency.count) == (3, 2)
    assert (clone.requests, clone.latency.count) == (1, 1)


def test_stats_count_status_classes():
    stats = Stats()
    for status, count in ((200, 3), (204, 1), (301, 2), (404, 1), (502, 4), (None, 5), (101, 1)):
        stats.add(status, 0.01, count=count)
    other = stats.copy()
    other.merge(stats)
    assert (stats.responses_2xx, stats.responses_3xx, stats.errors_4xx, stats.errors_5xx, stats.requests) == (4, 2, 1, 4, 17)
    assert (other.responses_2xx, other.responses_3xx, other.requests) == (8, 4, 34)


def test_stats_merge_rejects_sketches_of_another_accuracy():
    a = Stats()
    b = Stats(latency=LatencySketch(relative_accuracy=0.02))
    b.add(200, 0.1)
    with pytest.raises(ValueError):
        a.merge(b)
    assert a.requests == 0


# --- WindowedStats: time ---------------------------------------------------


def test_window_covers_the_buckets_of_seconds_after_now_minus_seconds():
    stats, clock = windowed(horizon=60)
    t0 = clock.now
    for offset in range(20):
        clock.now = t0 + offset + 0.5
        stats.add("a", 200, 0.01, count=offset + 1, at=clock.now)
    clock.now = t0 + 19.9
    # buckets s with now - 5 < s <= now: t0+15 .. t0+19
    assert stats.window("a", 5).requests == sum(range(16, 21))
    # explicit now; a fractional start excludes the bucket it falls in
    assert stats.window("a", 5, now=t0 + 10.0).requests == sum(range(7, 12))
    assert stats.window("a", 4.5, now=t0 + 10.0).requests == sum(range(7, 12))
    assert stats.window("a", 5.5, now=t0 + 10.0).requests == sum(range(6, 12))
    assert stats.window("a", 60).requests == sum(range(1, 21))


def test_events_expire_when_their_second_leaves_the_horizon():
    stats, clock = windowed(horizon=10)
    t0 = clock.now
    stats.add("a", 200, 0.01, at=t0 + 0.9)
    clock.now = t0 + 9.999  # head t0+9: window t0 .. t0+9
    assert stats.window("a", 10).requests == 1
    clock.now = t0 + 10.0  # head t0+10: window t0+1 .. t0+10
    assert stats.window("a", 10).requests == 0
    assert stats.footprint()["buckets"] == 0
    assert stats.cumulative("a").requests == 1


def test_an_event_older_than_the_horizon_counts_in_cumulative_only():
    stats, clock = windowed(horizon=10)
    stats.add("a", 500, 0.2, at=clock.now - 10)  # second head-10: just out
    stats.add("a", 200, 0.1, at=clock.now - 9)   # second head-9: just in
    assert stats.window("a", 10).requests == 1
    assert stats.cumulative("a").requests == 2
    assert stats.cumulative("a").errors_5xx == 1


def test_an_event_from_the_future_counts_in_the_newest_bucket():
    stats, clock = windowed(horizon=10)
    stats.add("a", 200, 0.1, at=clock.now + 3.5)
    assert stats.window("a", 1).requests == 1
    clock.now += 9.5  # the event's own second would still be in; it was placed at the old head
    assert stats.window("a", 10).requests == 1
    clock.now += 0.5
    assert stats.window("a", 10).requests == 0


def test_events_without_a_stamp_use_the_clock():
    stats, clock = windowed(horizon=10)
    stats.add("a", 200, 0.1)
    clock.now += 1
    stats.add("a", 200, 0.1)
    assert stats.window("a", 1).requests == 1
    assert stats.window("a", 2).requests == 2


def test_a_clock_jump_past_the_horizon_clears_the_window():
    stats, clock = windowed(horizon=10)
    for i in range(10):
        stats.add("a", 200, 0.1, at=clock.now - i)
    assert stats.footprint()["buckets"] == 10
    clock.now += 1000
    assert stats.window("a", 10).requests == 0
    assert stats.footprint()["buckets"] == 0
    assert stats.cumulative("a").requests == 10


def test_a_clock_stepping_back_keeps_the_head():
    stats, clock = windowed(horizon=10)
    head = clock.now
    clock.now -= 100
    stats.add("a", 200, 0.1)  # stamped 100 s before the head: too old for the window
    assert stats.window("a", 10, now=head).requests == 0
    assert stats.cumulative("a").requests == 1


@pytest.mark.parametrize("seconds", [0, -1, 10.5, 11])
def test_window_length_must_be_within_the_horizon(seconds):
    stats, _ = windowed(horizon=10)
    with pytest.raises(ValueError):
        stats.window("a", seconds)


@pytest.mark.parametrize("kwargs", [{"horizon_seconds": 0}, {"max_keys": 0}])
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        WindowedStats(clock=FakeClock(), **kwargs)


@pytest.mark.parametrize("seconds, at", [(-0.1, None), (math.inf, None), (0.1, math.nan), (0.1, math.inf)])
def test_invalid_events_leave_no_trace(seconds, at):
    stats, _ = windowed()
    with pytest.raises(ValueError):
        stats.add("a", 200, seconds, at=at)
    assert stats.keys() == []
    assert stats.footprint() == {"buckets": 0, "stats": 0, "bins": 0, "keys": 0}


# --- WindowedStats: cumulative, mark, keys ----------------------------------


def test_cumulative_window_and_mark():
    stats, clock = windowed(horizon=10)
    stats.add("a", 500, 0.3, at=clock.now - 30)
    stats.add("a", 200, 0.1)
    stats.add("b", 404, 0.2)
    assert stats.cumulative("a").requests == 2 and stats.window("a", 10).requests == 1
    stats.mark()
    assert stats.cumulative("a").requests == 0 and stats.cumulative("b").requests == 0
    assert stats.window("a", 10).requests == 1 and stats.window("b", 10).errors_4xx == 1
    stats.add("a", 503, 0.5)
    assert stats.cumulative("a").summary()["error_rate"] == 1.0
    assert stats.window("a", 10).summary()["error_rate"] == 0.5


def test_cumulative_returns_a_copy():
    stats, _ = windowed()
    stats.add("a", 200, 0.1)
    stats.cumulative("a").add(500, 9.0)
    assert stats.cumulative("a").requests == 1
    assert stats.cumulative("unknown").requests == 0


def test_keys_are_those_holding_data():
    stats, clock = windowed(horizon=10)
    stats.add("b", 200, 0.1)
    stats.add("a", 200, 0.1)
    assert stats.keys() == ["a", "b"]
    clock.now += 10
    assert stats.window("a", 10).requests == 0
    assert stats.keys() == ["a", "b"]  # still in the cumulative stats
    stats.mark()
    assert stats.keys() == []


def test_keys_beyond_max_keys_are_folded_into_other():
    stats, clock = windowed(horizon=10, max_keys=3)
    for key in ("k1", "k2", "k3", "k4", "k5"):
        stats.add(key, 500, 0.1)
    stats.add("k1", 200, 0.1)
    assert stats.keys() == [OTHER_KEY, "k1", "k2", "k3"]
    assert stats.window("k4", 10).requests == 0
    assert stats.window(OTHER_KEY, 10).requests == 2
    assert stats.cumulative(OTHER_KEY).errors_5xx == 2
    assert stats.window("k1", 10).requests == 2


def test_a_folded_out_key_gets_a_place_once_old_keys_are_gone():
    stats, clock = windowed(horizon=10, max_keys=2)
    stats.add("old1", 200, 0.1)
    stats.add("old2", 200, 0.1)
    stats.add("new", 200, 0.1)
    assert stats.cumulative(OTHER_KEY).requests == 1
    clock.now += 10
    stats.add("new", 200, 0.1)  # old keys still in the cumulative stats
    assert stats.cumulative("new").requests == 0
    stats.mark()
    stats.add("new", 200, 0.1)
    assert stats.cumulative("new").requests == 1
    assert stats.keys() == [OTHER_KEY, "new"]


# --- evidence (since mark_evidence) --------------------------------------------


def test_no_evidence_before_the_first_mark():
    stats, _ = windowed()
    stats.add("a", 500, 0.1)
    assert stats.evidence_mark is None
    assert stats.evidence("a").requests == 0
    assert stats.cumulative("a").requests == 1


def test_mark_evidence_starts_it_afresh_and_leaves_out_events_stamped_before_the_mark():
    stats, clock = windowed(horizon=10)
    stats.mark_evidence(clock.now - 5)
    stats.add("a", 500, 0.3, at=clock.now - 6)  # before the mark
    stats.add("a", 200, 0.1, at=clock.now - 5)  # at the mark: counts
    stats.add("a", 200, 0.2)  # no stamp: the clock's reading
    assert (stats.evidence("a").requests, stats.evidence("a").errors_5xx) == (2, 0)
    assert stats.evidence("a").latency.count == 2
    stats.mark_evidence(clock.now + 0.5)
    assert stats.evidence_mark == clock.now + 0.5
    assert stats.evidence("a").requests == 0
    stats.add("a", 503, 0.1)  # stamped by the clock, before the new mark
    stats.add("a", 503, 0.1, at=clock.now + 0.5, count=3)
    assert (stats.evidence("a").requests, stats.evidence("a").errors_5xx) == (3, 3)


def test_evidence_at_decides_alone_whether_an_event_is_evidence():
    stats, clock = windowed(horizon=10)
    stats.mark_evidence(clock.now)
    stats.add("a", 200, 0.1, at=clock.now, evidence_at=clock.now - 0.001)
    stats.add("a", 500, 0.1, at=clock.now - 1, evidence_at=clock.now + 0.001)
    stats.add("a", 500, 0.1, evidence_at=math.nan)
    assert (stats.evidence("a").requests, stats.evidence("a").errors_5xx) == (1, 1)
    # The window goes by `at` (or the clock) whatever evidence_at says.
    assert stats.window("a", 1).requests == 2 and stats.window("a", 2).requests == 3


def test_evidence_leaves_cumulative_and_window_alone():
    stats, clock = windowed(horizon=10)
    stats.add("a", 200, 0.1)
    stats.mark_evidence(clock.now)
    stats.add("a", 500, 0.2)
    stats.mark_evidence(clock.now + 1)
    assert stats.cumulative("a").requests == 2 and stats.window("a", 10).requests == 2
    stats.mark()
    stats.add("a", 500, 0.2, at=clock.now + 1)
    assert stats.evidence("a").requests == 1 and stats.cumulative("a").requests == 1


def test_evidence_returns_an_independent_copy():
    stats, clock = windowed()
    stats.mark_evidence(clock.now)
    stats.add("a", 200, 0.1)
    copy = stats.evidence("a")
    copy.add(500, 9.0)
    stats.add("a", 200, 0.1)
    assert copy.requests == 2 and stats.evidence("a").requests == 2 and stats.evidence("a").errors_5xx == 0


@pytest.mark.parametrize("at", [math.nan, math.inf, -math.inf])
def test_mark_evidence_rejects_a_stamp_no_clock_shows(at):
    stats, _ = windowed()
    with pytest.raises(ValueError):
        stats.mark_evidence(at)


def test_evidence_keys_are_bounded_by_max_keys_and_freed_by_the_next_mark():
    stats, clock = windowed(horizon=10, max_keys=2)
    stats.mark_evidence(clock.now)
    clock.now += 20  # nothing in the window any more once it moves
    for key in ("k1", "k2", "k3"):
        stats.add(key, 500, 0.1, at=clock.now - 15)  # out of the window: cumulative and evidence only
    assert stats.evidence("k3").requests == 0 and stats.evidence(OTHER_KEY).requests == 1
    stats.mark()
    assert stats.keys() == [OTHER_KEY, "k1", "k2"]  # still held by the evidence
    stats.add("k3", 200, 0.1, at=clock.now - 15)
    assert stats.evidence(OTHER_KEY).requests == 2
    stats.mark_evidence(clock.now)
    stats.mark()
    assert stats.keys() == [] and stats.footprint() == {"buckets": 0, "stats": 0, "bins": 0, "keys": 0}
    stats.add("k3", 200, 0.1, at=clock.now - 15)
    assert stats.keys() == ["k3"] and stats.footprint()["stats"] == 1  # cumulative only: before the mark


# --- WindowedStats against a brute-force model ------------------------------

events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=4),          # clock step before the event
        st.floats(min_value=-30, max_value=5),        # stamp relative to the clock
        st.sampled_from(["a", "b"]),
        st.sampled_from([200, 404, 500, None]),
        st.one_of(st.none(), st.floats(min_value=0, max_value=10)),
        st.integers(min_value=1, max_value=5),
    ),
    max_size=80,
)


@settings(max_examples=200)
@given(events, st.floats(min_value=0, max_value=30), st.floats(min_value=0.5, max_value=20))
def test_window_matches_a_brute_force_model(evs, final_step, length):
    horizon = 20
    stats, clock = windowed(horizon=horizon)
    head = math.floor(clock.now)
    placed: List[Tuple[int, str, Optional[int], Optional[float], int]] = []
    for step, offset, key, status, seconds, count in evs:
        clock.now += step
        head = max(head, math.floor(clock.now))
        stats.add(key, status, seconds, count, at=clock.now + offset)
        placed.append((min(math.floor(clock.now + offset), head), key, status, seconds, count))
    clock.now += final_step
    head = max(head, math.floor(clock.now))
    for key in ("a", "b"):
        expected = Stats()
        for second, k, status, seconds, count in placed:
            if k == key and second > head - horizon and second > clock.now - length and second <= clock.now:
                expected.add(status, seconds, count)
        got = stats.window(key, length)
        assert (got.requests, got.errors_5xx, got.errors_4xx) == (expected.requests, expected.errors_5xx, expected.errors_4xx)
        assert (got.latency.count, got.latency.max) == (expected.latency.count, expected.latency.max)
        cumulative = stats.cumulative(key)
        assert cumulative.requests == sum(c for _, k, _, _, c in placed if k == key)


# --- Bounded memory ---------------------------------------------------------


def test_memory_stays_bounded_over_a_million_events():
    horizon, max_keys, per_second = 60, 8, 200
    stats, clock = windowed(horizon=horizon, max_keys=max_keys)
    rng = random.Random(7)
    # 1 µs .. 1 day, spread evenly in log scale: the worst case for bins
    latencies = [10 ** rng.uniform(-6, math.log10(86400)) for _ in range(5000)]
    statuses = [200, 200, 200, 404, 500]
    start = clock.now
    peak = {"buckets": 0, "stats": 0, "bins": 0, "keys": 0}
    events = 1_000_000
    for i in range(events):
        clock.now = start + i / per_second  # 5000 s in all, 83 horizons
        # a few steady keys and a trickle of new ones that must be folded
        key = f"unique{i}" if i % 997 == 0 else f"server{i % 5}"
        stats.add(key, statuses[i % 5], latencies[i % 5000], at=clock.now)
        if i % 10_000 == 0:
            for name, value in stats.footprint().items():
                peak[name] = max(peak[name], value)
        if i % 100_000 == 50_000:
            stats.mark()
    for name, value in stats.footprint().items():
        peak[name] = max(peak[name], value)
    server0 = [i for i in range(events) if i % 5 == 0 and i % 997 != 0]
    assert stats.cumulative("server0").requests == sum(1 for i in server0 if i > 950_000)
    last_second = (events - 1) // per_second
    first_in_window = (last_second - horizon + 1) * per_second
    assert stats.window("server0", horizon).requests == sum(1 for i in server0 if i >= first_in_window)
    assert peak["buckets"] <= horizon
    assert peak["keys"] <= max_keys + 1
    assert peak["stats"] <= (horizon + 1) * (max_keys + 1)
    # a bucket's sketches hold at most one bin per event of its second, the
    # cumulative ones at most the 1260 bins of 1 µs .. 1 day
    assert peak["bins"] <= horizon * per_second + (max_keys + 1) * 1260
