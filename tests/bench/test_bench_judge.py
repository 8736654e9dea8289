"""bench/bench_judge.py: its streams match their rates, the old judge rolls back what it must, on a tiny grid."""

from __future__ import annotations

import importlib.util
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from nginx_canary.logs.window import Stats
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, Verdict

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_judge.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_judge", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_judge"] = module   # pool workers and dataclasses look it up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lam", [0.5, 5.0, 45.0, 450.0])
def test_poisson_mean_and_variance(bench: Any, lam: float) -> None:
    rng = random.Random(1)
    draws = [bench.poisson(rng, lam) for _ in range(4000)]
    assert abs(statistics.fmean(draws) - lam) < 5 * math.sqrt(lam / 4000)
    assert 0.85 * lam < statistics.variance(draws) < 1.15 * lam


@pytest.mark.parametrize("n, p", [(50, 0.0), (50, 1.0), (450, 0.02), (50, 0.5), (30, 0.97)])
def test_binomial_mean(bench: Any, n: int, p: float) -> None:
    rng = random.Random(2)
    draws = [bench.binomial(rng, n, p) for _ in range(4000)]
    assert all(0 <= d <= n for d in draws)
    assert abs(statistics.fmean(draws) - n * p) <= 5 * math.sqrt(n * p * (1 - p) / 4000) + 1e-9


def test_latencies_are_whole_milliseconds_around_20ms_with_a_tail(bench: Any) -> None:
    table = bench.latency_table(1.0)
    assert len(table) == bench.TABLE_SIZE and table == sorted(table)
    assert all(abs(v * 1000 - round(v * 1000)) < 1e-9 for v in table[::97])
    assert 0.018 <= table[len(table) // 2] <= 0.022
    assert table[int(0.99 * len(table))] > 0.1          # the long tail
    slower = bench.latency_table(2.0)
    assert 0.036 <= slower[len(slower) // 2] <= 0.044


@pytest.mark.parametrize("rate", [2.0, 20.0, 200.0])
def test_stream_counts_match_their_rates(bench: Any, rate: float) -> None:
    cell = bench.Cell(0.05, "+10", "none", rate)
    stream = bench.Stream(cell, 3, step=20.0)
    canary, stable = Stats(), Stats()
    previous = stream.start
    checks = 0
    for now, segments in stream.ticks():
        checks += 1
        assert now == pytest.approx(previous + bench.CHECK_SECONDS)
        for segment in segments:
            assert math.floor(previous) <= segment.second <= math.floor(now)
            for sample, stats in ((segment.canary, canary), (segment.stable, stable)):
                if sample is not None:
                    before = (stats.requests, stats.errors_5xx)
                    sample.add_to(stats)
                    assert (stats.requests, stats.errors_5xx) == (before[0] + sample.requests, before[1] + sample.errors)
        previous = now
    assert checks == 80
    for stats, per_second, share in ((canary, rate, 0.15), (stable, 9 * rate, 0.05)):
        expected = per_second * 20.0
        assert abs(stats.requests - expected) < 5 * math.sqrt(expected)
        assert stats.latency.count == stats.requests
        assert abs(stats.errors_5xx - share * stats.requests) <= 5 * math.sqrt(stats.requests * share) + 1


def _naive_window(judge: Any, first: int, last: int) -> Tuple[Stats, Stats]:
    canary, stable = Stats(), Stats()
    for second in range(first, last + 1):
        if second in judge.buckets:
            canary.merge(judge.buckets[second][0])
            stable.merge(judge.buckets[second][1])
    return canary, stable


def test_old_judge_window_is_every_bucket_in_range(bench: Any) -> None:
    """The kept merges give what merging the range's buckets afresh gives, as the window slides out."""
    stream = bench.Stream(bench.Cell(0.02, "+3", "none", 20.0), 5, step=15.0)
    judge = bench.OldJudge(stream.start, window=4.0)
    for now, segments in stream.ticks():
        for segment in segments:
            judge.feed(segment)
        window = min(4.0, now - (int(stream.start) + 1))
        if window < 1.0:
            continue
        first, last = math.floor(now - window) + 1, math.floor(now)
        got = judge._window(first, last)
        want = _naive_window(judge, first, last)
        for a, b in zip(got, want):
            assert a.summary() == b.summary()


def test_broken_canary_always_rolled_back_by_the_old_judge(bench: Any) -> None:
    makers = bench.judge_factories(["old"])
    cell = bench.Cell(0.02, "100%", "none", 20.0)
    times = [bench.simulate(cell, seed, makers, step=10.0)["old"] for seed in range(20)]
    assert all(t is not None for t in times)
    # Nothing judged before a whole second after the start's second, and two fails needed.
    assert all(1.0 < t <= 5.0 for t in times)
    assert all(abs(t / bench.CHECK_SECONDS - round(t / bench.CHECK_SECONDS)) < 1e-6 for t in times)


def test_judges_side_by_side_see_the_same_stream(bench: Any) -> None:
    cell = bench.Cell(0.02, "+3", "none", 20.0)
    makers = {"a": bench.OldJudge, "b": bench.OldJudge}
    for seed in range(5):
        result = bench.simulate(cell, seed, makers, step=20.0)
        assert result["a"] == result["b"]


def test_new_judge_adapter_judges_cumulative_stats_when_they_change(bench: Any) -> None:
    calls: List[Tuple[int, int, float]] = []

    looks: List[bool] = []

    def judge(canary: Stats, stable: Stats, limits: Any, at: float, elapsed: float, *,
              final_look: bool = False) -> Verdict:
        calls.append((canary.requests, stable.requests, elapsed))
        looks.append(final_look)
        verdict = FAIL if canary.requests >= 10 else INCONCLUSIVE
        return Verdict(verdict, (), "", canary.summary(), stable.summary(), at)

    makers = {"new": lambda start: bench.NewJudge(start, judge, object(), 30.0)}
    result = bench.simulate(bench.Cell(0.0, "none", "none", 2.0), 9, makers, step=30.0)
    assert result["new"] is not None and calls
    requests = [c for c, _, _ in calls]
    assert requests == sorted(requests) and requests[-1] >= 10 > requests[-2]
    assert result["new"] == pytest.approx(calls[-1][2])
    assert not any(looks)  # failed before the bake time's end: the planned look never came


def test_new_judge_adapter_makes_the_planned_look_once_at_the_bake_end(bench: Any) -> None:
    looks: List[Tuple[float, bool]] = []

    def judge(canary: Stats, stable: Stats, limits: Any, at: float, elapsed: float, *,
              final_look: bool = False) -> Verdict:
        looks.append((elapsed, final_look))
        return Verdict(INCONCLUSIVE, (), "", canary.summary(), stable.summary(), at)

    makers = {"new": lambda start: bench.NewJudge(start, judge, object(), 5.0)}
    assert bench.simulate(bench.Cell(0.0, "none", "none", 20.0), 3, makers, step=5.0)["new"] is None
    planned = [elapsed for elapsed, final in looks if final]
    assert planned == [pytest.approx(5.0)]


def test_tiny_grid_in_the_pool(bench: Any) -> None:
    cells = [(bench.Cell(0.02, "100%", "none", 20.0), 6), (bench.Cell(0.0, "none", "none", 20.0), 3)]
    results, cut = bench.run_grid(cells, ["old"], seed=1, jobs=2, max_seconds=120.0, step=5.0)
    assert not cut
    assert [len(r["old"]) for r in results] == [6, 3]
    assert all(t is not None for t in results[0]["old"])
    text = bench.table([c for c, _ in cells], results, ["old"])
    assert "| 2.0 % | 100% | none | 20 | 6 | 100.0 % |" in text
    assert bench.targets([c for c, _ in cells], results, "old").startswith("targets, old judge: false rollbacks")
