#!/usr/bin/env python3
"""The judge on synthetic streams (issue #12, item 7): false rollbacks and time to detection, old judge and new.

One simulated *run* is the 10 % step of a rollout: ``--step`` seconds (60) of
stream time, the canary receiving ``R`` req/s and the stable group ``9 R``,
checked every ``--check`` seconds (250 ms). Per check interval (a *tick*) each
group's requests are a Poisson count, its 5xx a binomial count of those, and
its latencies independent draws from a fixed distribution, rounded to the
millisecond as nginx logs ``$request_time``: a lognormal body (median 20 ms,
sigma 0.5) with a 3 % lognormal tail (median 120 ms, sigma 1.0, capped at
60 s), multiplied by the cell's latency shift before rounding. 5xx responses
take their latency from the same distribution. The counts go into
:class:`nginx_canary.logs.window.Stats` with ``Stats.add``, as the log reader
puts them there. The step starts at a random fraction of a second, and a tick
that crosses a whole second is drawn as two parts, one per second, so that
the old judge's one-second buckets get exactly the requests stamped in them.

Both judges see the SAME stream in a run (one seed per run, one stream fed to
both); a judge that rolls back stops there, the run stops when every judge
has stopped or the step ends.

OLD judge, what the daemon did before issue #12: at every check
:func:`nginx_canary.rollout.analysis.evaluate` over a sliding window (30 s) of
whole one-second buckets, cut as ``RunTraffic.groups`` cut it (nothing judged
until one whole second of the run has passed), the thresholds that were
``AnalysisSettings``' defaults (``OLD_THRESHOLDS``: min_requests 20, 5xx rate
5 %, 5xx increase 2 points, p99 1 s, p99 ratio 2), and a rollback at 2
consecutive fails (inconclusive neither counts nor
resets: ``rollout.streak.next_failure_streak``).

NEW judge: ``judge(canary, stable, AnalysisSettings(), at, elapsed)``
(:mod:`nginx_canary.rollout.judge`) over the stats since the step began; a
fail rolls back at once.

A judge is only called when its evidence changed since its last call;
otherwise its last verdict stands for the check (and counts again in the old
judge's streak, as the daemon's repeated look at an unchanged window did).

The grid: stable 5xx (baseline) 0 %, 0.5 %, 2 %, 5 %; canary 5xx regression
none, +1, +3, +10 points, 100 % (every canary request 5xx); canary traffic 2,
20, 200 req/s: the *5xx cells*, ``--runs`` runs each (2,000). The *latency
cells*: canary latency +20 % and +100 % with no 5xx regression, every
baseline and traffic, ``--latency-runs`` runs each (500). Per cell and judge:
runs, share rolled back within the step (in a cell with no regression, the
false-rollback rate), median and p90 of the time to rollback over ALL runs
(stream seconds from the step's start to the check that rolled back; a run
that never rolled back counts as never, so "-" when fewer than half / 90 %
of runs rolled back).

Then one line per judge against the issue's targets: false rollbacks <= 1 % in
every cell without regression; median time to roll back a 100 %-broken canary
at 20 canary req/s <= 0.3 s; +3 points at 20 canary req/s rolled back in >=
95 % of runs within the step.

Runs go in chunks to a ``multiprocessing`` pool (``--jobs``, default all
cores), cells interleaved so that a run cut short by ``--max-seconds`` still
covers every cell (the table says how many runs each cell got). Pure Python,
standard library and the package only; prints figures, asserts nothing.

Usage: .venv/bin/python bench/bench_judge.py [--quick] [--judges old,new] [--runs N] [--latency-runs N]
       [--max-seconds S] [--jobs N] [--seed N] [--json FILE]

--quick: 100 runs per 5xx cell, 25 per latency cell (about 2.5 min on 2 cores, old judge only).
A full run (132,000 runs), old judge only, takes about 35 min on 2 shared cores; the new judge adds its own cost.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
try:   # the installed package, as users run it
    import nginx_canary  # noqa: F401
except ImportError:
    sys.path.append(REPO)

from nginx_canary.logs.window import Stats  # noqa: E402
from nginx_canary.rollout.analysis import evaluate  # noqa: E402
from nginx_canary.rollout.checks import Thresholds  # noqa: E402
from nginx_canary.rollout.streak import next_failure_streak  # noqa: E402
from nginx_canary.rollout.verdict import FAIL  # noqa: E402

SEED = 20261203
RUNS, LATENCY_RUNS = 2000, 500
QUICK_RUNS, QUICK_LATENCY_RUNS = 100, 25
CHUNK = 50                 # runs per pool task
PROGRESS_EVERY = 30.0      # seconds between two progress lines on stderr
STEP_SECONDS = 60.0
CHECK_SECONDS = 0.25
STABLE_SHARE = 9           # stable req/s per canary req/s: the 10 % step
EPOCH = 1_764_720_000.0    # stream time 0 sits near a real $msec, for the same float rounding

BASELINES = (0.0, 0.005, 0.02, 0.05)
REGRESSIONS: Tuple[Tuple[str, Optional[float]], ...] = (   # label, points added (None: every request 5xx)
    ("none", 0.0), ("+1", 0.01), ("+3", 0.03), ("+10", 0.10), ("100%", None))
LATENCY_SHIFTS: Tuple[Tuple[str, float], ...] = (("none", 1.0), ("+20%", 1.2), ("+100%", 2.0))
RATES = (2.0, 20.0, 200.0)
JUDGES = ("old", "new")

# The old judge's defaults (AnalysisSettings before issue #12), written out: the settings' defaults move on.
OLD_WINDOW = 30.0
OLD_FAILURE_THRESHOLD = 2
OLD_THRESHOLDS = Thresholds(min_requests=20, max_error_rate=0.05, max_error_rate_increase=0.02,
                            max_p99_latency=1.0, max_p99_latency_ratio=2.0)

# Latency model (seconds): lognormal body plus a lognormal tail, rounded to the millisecond.
BODY_MEDIAN, BODY_SIGMA = 0.020, 0.5
TAIL_SHARE, TAIL_MEDIAN, TAIL_SIGMA = 0.03, 0.120, 1.0
MAX_MS = 60_000
TABLE_SIZE = 1 << 16       # inverse-CDF table: a draw is a uniform 16-bit pick from it (tail resolved to 1 in 65,536)

TARGET_FALSE = 0.01
TARGET_BROKEN_MEDIAN = 0.3
TARGET_PLUS3 = 0.95


# -- the grid ----------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One point of the grid: stable 5xx share, canary regression, latency shift, canary req/s."""

    baseline: float
    regression: str
    latency: str
    rate: float

    @property
    def canary_error_share(self) -> float:
        points = dict(REGRESSIONS)[self.regression]
        return 1.0 if points is None else min(1.0, self.baseline + points)

    @property
    def latency_factor(self) -> float:
        return dict(LATENCY_SHIFTS)[self.latency]

    @property
    def healthy(self) -> bool:
        return self.regression == "none" and self.latency == "none"


def grid(baselines: Sequence[float] = BASELINES, rates: Sequence[float] = RATES,
         regressions: Sequence[str] = tuple(r for r, _ in REGRESSIONS),
         latencies: Sequence[str] = tuple(name for name, _ in LATENCY_SHIFTS[1:])) -> Tuple[List[Cell], List[Cell]]:
    """(5xx cells, latency cells) in table order."""
    errors = [Cell(b, r, "none", q) for b in baselines for r in regressions for q in rates]
    slow = [Cell(b, "none", s, q) for b in baselines for s in latencies for q in rates]
    return errors, slow


# -- random variates (random has no Poisson or binomial before Python 3.12) ---------

def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson(lam) count: inversion below 10, else Hoermann's PTRS transformed rejection."""
    if lam <= 0.0:
        return 0
    if lam < 10.0:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    log_inv_alpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + log_inv_alpha - math.log(a / (us * us) + b) <= -lam + k * loglam - math.lgamma(k + 1):
            return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) count by geometric skips between successes: O(n * min(p, 1-p) + 1)."""
    if p <= 0.0 or n <= 0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    log_q = math.log1p(-p)
    count, at = 0, 0
    while True:
        at += int(math.log(1.0 - rng.random()) / log_q) + 1
        if at > n:
            return count
        count += 1


def _mixture_cdf(seconds: float) -> float:
    def lognormal(median: float, sigma: float) -> float:
        return 0.5 * (1.0 + math.erf(math.log(seconds / median) / (sigma * math.sqrt(2.0))))
    return (1.0 - TAIL_SHARE) * lognormal(BODY_MEDIAN, BODY_SIGMA) + TAIL_SHARE * lognormal(TAIL_MEDIAN, TAIL_SIGMA)


_TABLES: Dict[float, List[float]] = {}


def latency_table(factor: float) -> List[float]:
    """TABLE_SIZE latencies (seconds, whole ms) at evenly spaced quantiles of the model times ``factor``."""
    table = _TABLES.get(factor)
    if table is not None:
        return table
    # P(rounded value <= m ms) = CDF((m + 0.5) ms / factor); walk m up through the quantiles.
    table, ms = [], 0
    cdf = _mixture_cdf((ms + 0.5) / 1000.0 / factor)
    for i in range(TABLE_SIZE):
        q = (i + 0.5) / TABLE_SIZE
        while cdf < q and ms < MAX_MS:
            ms += 1
            cdf = _mixture_cdf((ms + 0.5) / 1000.0 / factor)
        table.append(ms / 1000.0)
    _TABLES[factor] = table
    return table


# -- the stream --------------------------------------------------------------------

@dataclass
class Sample:
    """One group's requests in one span of time: counts, and latency -> count for the 5xx and the rest."""

    requests: int
    errors: int
    ok: Counter
    failed: Counter

    def add_to(self, stats: Stats) -> None:
        """Count these requests in ``stats`` (each judge adds to its own: cheaper than merging a Stats made once)."""
        for latency, count in self.ok.items():
            stats.add(200, latency, count)
        for latency, count in self.failed.items():
            stats.add(500, latency, count)


@dataclass
class Segment:
    """The requests of a tick stamped within one whole second (``second``): per group, a Sample or None."""

    second: int
    canary: Optional[Sample]
    stable: Optional[Sample]


def _sample(rng: random.Random, rate: float, seconds: float, error_share: float, table: List[float]) -> Optional[Sample]:
    n = poisson(rng, rate * seconds)
    if n == 0:
        return None
    errors = binomial(rng, n, error_share)
    # n uniform 16-bit indices into the table, gathered in C; i.i.d., so the first `errors` are a fair pick.
    picks = memoryview(rng.randbytes(2 * n)).cast("H")
    latencies = (table[picks[0]],) if n == 1 else itemgetter(*picks)(table)
    return Sample(n, errors, Counter(latencies[errors:]), Counter(latencies[:errors]))


@dataclass
class Stream:
    """A seeded run's traffic, tick by tick: ``start`` is the step's start (absolute seconds)."""

    cell: Cell
    seed: int
    step: float = STEP_SECONDS
    check: float = CHECK_SECONDS
    rng: random.Random = field(init=False)
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.start = EPOCH + self.rng.random()

    def ticks(self) -> Iterator[Tuple[float, List[Segment]]]:
        """``(now, segments)`` per check: the requests stamped since the previous check, up to ``now``."""
        rng, cell = self.rng, self.cell
        canary_table = latency_table(cell.latency_factor)
        stable_table = latency_table(1.0)
        canary_rate, stable_rate = cell.rate, cell.rate * STABLE_SHARE
        canary_share = cell.canary_error_share
        ticks = round(self.step / self.check)
        begin = self.start
        for k in range(1, ticks + 1):
            end = self.start + k * self.check
            cuts = [begin]
            for second in range(math.floor(begin) + 1, math.floor(end) + 1):
                if begin < second < end:
                    cuts.append(float(second))
            cuts.append(end)
            segments = []
            for lo, hi in zip(cuts, cuts[1:]):
                length = hi - lo
                segments.append(Segment(math.floor(lo),
                                        _sample(rng, canary_rate, length, canary_share, canary_table),
                                        _sample(rng, stable_rate, length, cell.baseline, stable_table)))
            yield end, segments
            begin = end


# -- the judges --------------------------------------------------------------------

class OldJudge:
    """``evaluate`` over a sliding window of one-second buckets, rollback at N consecutive fails."""

    name = "old"

    def __init__(self, start: float, window: float = OLD_WINDOW, failure_threshold: int = OLD_FAILURE_THRESHOLD,
                 thresholds: Thresholds = OLD_THRESHOLDS) -> None:
        self.since = start
        self.window = window
        self.failure_threshold = failure_threshold
        self.thresholds = thresholds
        self.buckets: Dict[int, Tuple[Stats, Stats]] = {}
        self.complete = _SlidingMerge()
        self.complete_range: Optional[Tuple[int, int]] = None    # the (first, last) complete_total is for
        self.complete_total = (Stats(), Stats())
        self.streak = 0
        self.fed = 0                      # requests fed so far: the window's version, with its range
        self.last_key: Optional[Tuple[int, int, int]] = None
        self.last_verdict: Optional[str] = None

    def feed(self, segment: Segment) -> None:
        bucket = self.buckets.get(segment.second)
        if bucket is None:
            bucket = self.buckets[segment.second] = (Stats(), Stats())
        for sample, stats in ((segment.canary, bucket[0]), (segment.stable, bucket[1])):
            if sample is not None:
                sample.add_to(stats)
                self.fed += sample.requests

    def check(self, now: float) -> bool:
        """Judge at ``now``; True when this check rolls back."""
        verdict = self._verdict(now)
        self.streak = next_failure_streak(self.streak, verdict)
        return self.streak >= self.failure_threshold

    def _verdict(self, now: float) -> str:
        # RunTraffic.groups, then WindowedStats.window, with their float arithmetic.
        window_seconds = min(self.window, now - (int(self.since) + 1))
        if window_seconds < 1.0:
            return "inconclusive"          # evaluate() on two empty Stats
        first, last = math.floor(now - window_seconds) + 1, math.floor(now)
        key = (first, last, self.fed)
        if key == self.last_key:
            assert self.last_verdict is not None
            return self.last_verdict
        canary, stable = self._window(first, last)
        self.last_key, self.last_verdict = key, evaluate(canary, stable, self.thresholds, now).verdict
        return self.last_verdict

    def _window(self, first: int, last: int) -> Tuple[Stats, Stats]:
        """Merged stats of the buckets first..last: whole seconds before ``last`` kept merged, plus ``last``."""
        if self.complete_range != (first, last):
            merged = self.complete
            for second in range(first if merged.newest is None else max(first, merged.newest + 1), last):
                merged.push(second, self.buckets.get(second))
            merged.drop_before(first)
            self.complete_total = merged.total()
            self.complete_range = (first, last)
        canary, stable = (stats.copy() for stats in self.complete_total)
        current = self.buckets.get(last)
        if current is not None:
            canary.merge(current[0])
            stable.merge(current[1])
        return canary, stable


class _SlidingMerge:
    """The merged (canary, stable) stats of a FIFO of one-second buckets (two stacks: O(1) merges per bucket)."""

    def __init__(self) -> None:
        self.front: List[Tuple[int, Stats, Stats]] = []   # (second, suffix merges), oldest first
        self.front_at = 0
        self.back: List[Tuple[int, Optional[Tuple[Stats, Stats]]]] = []
        self.back_total = (Stats(), Stats())
        self.newest: Optional[int] = None

    def push(self, second: int, bucket: Optional[Tuple[Stats, Stats]]) -> None:
        self.back.append((second, bucket))
        if bucket is not None:
            self.back_total[0].merge(bucket[0])
            self.back_total[1].merge(bucket[1])
        self.newest = second

    def drop_before(self, first: int) -> None:
        while True:
            if self.front_at == len(self.front):
                if not self.back or self.back[0][0] >= first:
                    return
                self._flip()
            if self.front[self.front_at][0] >= first:
                return
            self.front_at += 1

    def _flip(self) -> None:
        """Move the back stack to the front as suffix merges (newest to oldest)."""
        suffix: List[Tuple[int, Stats, Stats]] = []
        canary, stable = Stats(), Stats()
        for second, bucket in reversed(self.back):
            canary, stable = canary.copy(), stable.copy()
            if bucket is not None:
                canary.merge(bucket[0])
                stable.merge(bucket[1])
            suffix.append((second, canary, stable))
        suffix.reverse()
        self.front, self.front_at = suffix, 0
        self.back, self.back_total = [], (Stats(), Stats())

    def total(self) -> Tuple[Stats, Stats]:
        """Fresh stats: everything held."""
        if self.front_at < len(self.front):
            _, canary, stable = self.front[self.front_at]
            canary, stable = canary.copy(), stable.copy()
        else:
            canary, stable = Stats(), Stats()
        canary.merge(self.back_total[0])
        stable.merge(self.back_total[1])
        return canary, stable


class NewJudge:
    """``judge`` over the stats since the step began; a fail rolls back at once.

    The judge gets this adapter's own Stats, not copies (``evidence()`` hands out
    copies): copying every check would cost more than the judging; the judge
    must not change them.
    """

    name = "new"

    def __init__(self, start: float, judge: Callable[..., Any], limits: Any, bake: float) -> None:
        self.start = start
        self.judge, self.limits = judge, limits
        self.bake = bake  # the step's planned look falls at the end of its bake time: the step's length here
        self.looked = False
        self.canary, self.stable = Stats(), Stats()
        self.changed = False

    def feed(self, segment: Segment) -> None:
        for sample, stats in ((segment.canary, self.canary), (segment.stable, self.stable)):
            if sample is not None:
                sample.add_to(stats)
                self.changed = True

    def check(self, now: float) -> bool:
        final_look = not self.looked and now - self.start >= self.bake
        if not self.changed and not final_look:
            return False                   # the last verdict (not a fail, or the run had stopped) stands
        self.changed = False
        self.looked = self.looked or final_look
        verdict = self.judge(self.canary, self.stable, self.limits, now, now - self.start, final_look=final_look)
        return verdict.verdict == FAIL


def judge_factories(names: Sequence[str], step: float = STEP_SECONDS) -> Dict[str, Callable[[float], Any]]:
    """Judge name -> a maker of that judge for a step starting at a time.

    Raises ImportError when "new" is asked for and nginx_canary.rollout.judge is missing.
    """
    makers: Dict[str, Callable[[float], Any]] = {}
    for name in names:
        if name == "old":
            makers[name] = OldJudge
        elif name == "new":
            from nginx_canary.config.model import AnalysisSettings
            from nginx_canary.rollout.judge import judge
            limits = AnalysisSettings()
            makers[name] = lambda start, judge=judge, limits=limits: NewJudge(start, judge, limits, step)
        else:
            raise ValueError(f"unknown judge {name!r}; expected one of {', '.join(JUDGES)}")
    return makers


def simulate(cell: Cell, seed: int, makers: Dict[str, Callable[[float], Any]],
             step: float = STEP_SECONDS, check: float = CHECK_SECONDS) -> Dict[str, Optional[float]]:
    """One run: judge name -> stream seconds from the step's start to its rollback, None if it never rolled back."""
    stream = Stream(cell, seed, step, check)
    active = {name: make(stream.start) for name, make in makers.items()}
    result: Dict[str, Optional[float]] = {name: None for name in makers}
    for now, segments in stream.ticks():
        for name, judge in list(active.items()):
            for segment in segments:
                judge.feed(segment)
            if judge.check(now):
                result[name] = round(now - stream.start, 6)
                del active[name]
        if not active:
            break
    return result


# -- running the grid --------------------------------------------------------------

def run_seed(base: int, cell_index: int, run: int) -> int:
    return (base * 1_000_003 + cell_index) * 1_000_003 + run


_WORKER: Dict[str, Any] = {}


def _init_worker(judges: Sequence[str], step: float, check: float) -> None:
    _WORKER.update(makers=judge_factories(judges, step), step=step, check=check)


def _run_chunk(task: Tuple[int, Cell, int, int, int]) -> Tuple[int, Dict[str, List[Optional[float]]]]:
    cell_index, cell, base, first, count = task
    makers, step, check = _WORKER["makers"], _WORKER["step"], _WORKER["check"]
    times: Dict[str, List[Optional[float]]] = {name: [] for name in makers}
    for run in range(first, first + count):
        for name, seconds in simulate(cell, run_seed(base, cell_index, run), makers, step, check).items():
            times[name].append(seconds)
    return cell_index, times


def quantile(times: Sequence[Optional[float]], q: float) -> Optional[float]:
    """The q-quantile (nearest rank) over every run, a run that never rolled back counting as infinite."""
    if not times:
        return None
    ordered = sorted(math.inf if t is None else t for t in times)
    value = ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
    return None if value == math.inf else value


def summarize(times: Sequence[Optional[float]]) -> Dict[str, Any]:
    rolled = sum(t is not None for t in times)
    return {"runs": len(times), "rolled_back": rolled, "share": rolled / len(times) if times else None,
            "median": quantile(times, 0.5), "p90": quantile(times, 0.9)}


def run_grid(cells: Sequence[Tuple[Cell, int]], judges: Sequence[str], seed: int, jobs: int,
             max_seconds: float, step: float = STEP_SECONDS, check: float = CHECK_SECONDS, progress: bool = False
             ) -> Tuple[List[Dict[str, List[Optional[float]]]], bool]:
    """Per cell (in order), judge -> time per run; and whether ``max_seconds`` cut the runs short."""
    tasks = []
    for first in range(0, max(runs for _, runs in cells), CHUNK):
        for index, (cell, runs) in enumerate(cells):
            if first < runs:
                tasks.append((index, cell, seed, first, min(CHUNK, runs - first)))
    results: List[Dict[str, List[Optional[float]]]] = [{name: [] for name in judges} for _ in cells]
    began = time.monotonic()
    deadline = began + max_seconds
    total, done, shown = sum(runs for _, runs in cells), 0, began
    cut = False
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(tuple(judges), step, check)) as pool:
        pending = pool.imap(_run_chunk, tasks)   # in order: the interleaving is what a cut keeps
        for _ in tasks:
            left = deadline - time.monotonic()
            try:
                index, times = pending.next(timeout=max(0.0, left))
            except multiprocessing.TimeoutError:
                cut = True
                pool.terminate()
                break
            for name, values in times.items():
                results[index][name].extend(values)
            done += len(next(iter(times.values()), []))
            if progress and time.monotonic() - shown >= PROGRESS_EVERY:
                shown = time.monotonic()
                print(f"  {done:,} of {total:,} runs, {shown - began:.0f} s", file=sys.stderr, flush=True)
    return results, cut


# -- output ------------------------------------------------------------------------

def _pct(share: Optional[float]) -> str:
    return "-" if share is None else f"{share * 100:.1f} %"


def _secs(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _rate(rate: float) -> str:
    return f"{rate:g}"


def table(cells: Sequence[Cell], results: Sequence[Dict[str, List[Optional[float]]]], judges: Sequence[str]) -> str:
    """The Markdown table: one row per cell, per judge rolled back / median / p90 time to rollback."""
    head = ["stable 5xx", "canary 5xx", "canary latency", "canary req/s", "runs"]
    for name in judges:
        head += [f"{name}: rolled back", f"{name}: median s", f"{name}: p90 s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for cell, times in zip(cells, results):
        runs = min(len(v) for v in times.values()) if times else 0
        row = [_pct(cell.baseline), cell.regression, cell.latency, _rate(cell.rate), str(runs)]
        for name in judges:
            s = summarize(times[name])
            row += [_pct(s["share"]), _secs(s["median"]), _secs(s["p90"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets(cells: Sequence[Cell], results: Sequence[Dict[str, List[Optional[float]]]], name: str) -> str:
    """One line: the issue's three targets for judge ``name``, each with its figure and whether it is met."""
    healthy = [summarize(t[name])["share"] for c, t in zip(cells, results) if c.healthy and t[name]]
    broken = [summarize(t[name])["median"] for c, t in zip(cells, results)
              if c.regression == "100%" and c.latency == "none" and c.rate == 20.0 and t[name]]
    plus3 = [summarize(t[name])["share"] for c, t in zip(cells, results)
             if c.regression == "+3" and c.latency == "none" and c.rate == 20.0 and t[name]]
    parts = []
    if healthy:
        worst = max(healthy)
        parts.append(f"false rollbacks worst {_pct(worst)} (<= 1 %: {'yes' if worst <= TARGET_FALSE else 'NO'})")
    if broken:
        slowest = None if any(m is None for m in broken) else max(broken)   # type: ignore[type-var]
        ok = slowest is not None and slowest <= TARGET_BROKEN_MEDIAN
        parts.append(f"100 %-broken at 20 req/s median worst {_secs(slowest)} s (<= 0.3 s: {'yes' if ok else 'NO'})")
    if plus3:
        least = min(plus3)
        parts.append(f"+3 points at 20 req/s caught worst {_pct(least)} (>= 95 %: {'yes' if least >= TARGET_PLUS3 else 'NO'})")
    return f"targets, {name} judge: " + ("; ".join(parts) if parts else "no cell of the targets was run")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_RUNS} runs per 5xx cell and {QUICK_LATENCY_RUNS} per latency cell")
    p.add_argument("--runs", type=int, default=None, help=f"runs per 5xx cell (default {RUNS})")
    p.add_argument("--latency-runs", type=int, default=None, help=f"runs per latency cell (default {LATENCY_RUNS})")
    p.add_argument("--judges", default=",".join(JUDGES), help="comma-separated: old, new (default: both)")
    p.add_argument("--no-latency", action="store_true", help="the 5xx cells only")
    p.add_argument("--step", type=float, default=STEP_SECONDS, help="step length, stream seconds (default %(default)s)")
    p.add_argument("--check", type=float, default=CHECK_SECONDS, help="check interval, seconds (default %(default)s)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--max-seconds", type=float, default=3600.0,
                   help="wall-clock bound: stop there and report the runs done (default %(default)s)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--json", metavar="FILE", help="also write the figures there")
    args = p.parse_args(argv)
    judges = [name.strip() for name in args.judges.split(",") if name.strip()]
    try:
        judge_factories(judges)
    except (ImportError, ValueError) as exc:
        p.error(f"--judges {args.judges}: {exc}")
    runs = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else RUNS)
    latency_runs = args.latency_runs if args.latency_runs is not None else (
        QUICK_LATENCY_RUNS if args.quick else LATENCY_RUNS)
    if runs < 1 or latency_runs < 0:
        p.error("--runs must be at least 1 and --latency-runs at least 0")
    errors, slow = grid()
    cells = [(c, runs) for c in errors] + ([] if args.no_latency or not latency_runs else [(c, latency_runs) for c in slow])
    print(f"bench_judge: judges {', '.join(judges)}; {len(errors)} 5xx cells x {runs} runs"
          + ("" if len(cells) == len(errors) else f", {len(slow)} latency cells x {latency_runs} runs")
          + f"; step {args.step:g} s checked every {args.check:g} s; seed {args.seed}; {args.jobs} jobs", flush=True)
    began = time.monotonic()
    results, cut = run_grid(cells, judges, args.seed, args.jobs, args.max_seconds, args.step, args.check,
                            progress=True)
    elapsed = time.monotonic() - began
    done = sum(min(len(v) for v in r.values()) for r in results)
    print(f"{done:,} runs in {elapsed:.0f} s" + (f" (cut short by --max-seconds {args.max_seconds:g})" if cut else ""))
    print()
    plain = [c for c, _ in cells]
    print(table(plain, results, judges))
    print()
    for name in judges:
        print(targets(plain, results, name))
    if args.json:
        out = {"seed": args.seed, "step": args.step, "check": args.check, "seconds": elapsed, "cut": cut,
               "cells": [{"baseline": c.baseline, "regression": c.regression, "latency": c.latency, "rate": c.rate,
                          **{name: summarize(r[name]) for name in judges}} for c, r in zip(plain, results)]}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
