"""Bounded-memory request counters and latency sketches, per key, over time.

A key is whatever the caller groups by: a server address, a group name
(``stable`` / ``canary``). ``WindowedStats`` keeps, for every key, the stats of
a sliding window (a ring of one-second buckets), the cumulative stats since
the last ``mark()`` (the metrics' counters) and the evidence since the last
``mark_evidence(at)`` (what the rollout's judge reads for a step). Memory does not grow with the number of log lines: it is
bounded by the horizon, the number of keys and the sketch's bin bound.

Not thread-safe: one owner (the daemon's main loop) updates and reads it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from nginx_canary.logs.sketch import LatencySketch

#: The key that stands for every key past ``max_keys``.
OTHER_KEY = "(other)"

# Latencies in summaries: nginx logs milliseconds, so microseconds lose nothing
# and hide the sketch's float noise.
_SUMMARY_DIGITS = 6
_SUMMARY_QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99))
_WIRE_COUNTS = ("requests", "errors_5xx", "errors_4xx", "responses_2xx", "responses_3xx")


# eq=False: sketches have no value equality, so a generated __eq__ would
# compare them by identity and call two equal-looking Stats different.
@dataclass(eq=False)
class Stats:
    """Request and error counts plus a latency sketch for one key and span of time."""

    requests: int = 0
    errors_5xx: int = 0
    errors_4xx: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)
    # For metrics by status class; requests with no status are in none of them.
    responses_2xx: int = 0
    responses_3xx: int = 0

    def add(self, status: Optional[int], seconds: Optional[float], count: int = 1) -> None:
        """Count ``count`` requests with this status and latency.

        A None status (nginx logged ``-``) is a request in neither error class;
        None seconds adds nothing to the latency sketch. Raises ValueError for
        count < 1 or a negative, NaN or infinite latency; nothing is counted then.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count!r}")
        if seconds is not None:
            self.latency.add(seconds, count)
        self.requests += count
        if status is not None:
            if 500 <= status < 600:
                self.errors_5xx += count
            elif 400 <= status < 500:
                self.errors_4xx += count
            elif 200 <= status < 300:
                self.responses_2xx += count
            elif 300 <= status < 400:
                self.responses_3xx += count

    def merge(self, other: "Stats") -> None:
        """Add ``other``'s counts and latencies to these (``other`` is unchanged).

        Raises ValueError when the two sketches' accuracies differ.
        """
        self.latency.merge(other.latency)
        self.requests += other.requests
        self.errors_5xx += other.errors_5xx
        self.errors_4xx += other.errors_4xx
        self.responses_2xx += other.responses_2xx
        self.responses_3xx += other.responses_3xx

    def copy(self) -> "Stats":
        """Independent stats with the same contents."""
        return Stats(self.requests, self.errors_5xx, self.errors_4xx, self.latency.copy(), self.responses_2xx,
                     self.responses_3xx)

    def to_wire(self) -> Dict[str, object]:
        """The counts and sketch as JSON-ready data: :meth:`from_wire` reads it back."""
        return {"requests": self.requests, "errors_5xx": self.errors_5xx, "errors_4xx": self.errors_4xx,
                "responses_2xx": self.responses_2xx, "responses_3xx": self.responses_3xx,
                "latency": self.latency.to_wire()}

    @classmethod
    def from_wire(cls, data: object) -> "Stats":
        """The stats :meth:`to_wire` described. Raises ValueError when ``data`` is not such a description."""
        if not isinstance(data, dict):
            raise ValueError("stats must be a JSON object")
        counts = []
        for name in _WIRE_COUNTS:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"stats: {name} must be a whole number >= 0, not {value!r}")
            counts.append(value)
        requests, errors_5xx, errors_4xx, ok, moved = counts
        if errors_5xx + errors_4xx + ok + moved > requests:
            raise ValueError("stats: more responses by class than requests")
        latency = LatencySketch.from_wire(data.get("latency"))
        if latency.count > requests:
            raise ValueError("stats: more latency samples than requests")
        return cls(requests, errors_5xx, errors_4xx, latency, ok, moved)

    def summary(self) -> Dict[str, Optional[float]]:
        """The figures checks and reports use.

        Keys: ``requests``, ``errors_5xx``, ``errors_4xx``, ``error_rate`` (5xx
        per request, 0.0 without requests) and the latencies ``p50``, ``p90``,
        ``p95``, ``p99``, ``max`` in seconds rounded to microseconds (None
        without latency samples).
        """
        result: Dict[str, Optional[float]] = {
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "errors_4xx": self.errors_4xx,
            "error_rate": self.errors_5xx / self.requests if self.requests else 0.0,
        }
        for name, q in _SUMMARY_QUANTILES:
            result[name] = _round(self.latency.quantile(q))
        result["max"] = _round(self.latency.max)
        return result


def _round(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds, _SUMMARY_DIGITS)


class WindowedStats:
    """Per-key stats over a sliding window of one-second buckets, since a mark, and since an evidence mark.

    Time: an event belongs to the second ``floor(at)`` of its own timestamp
    (``at``, from the log line; the clock's reading when not given). The window
    ends at the newest second the clock has shown (the *head*) and keeps
    ``horizon_seconds`` buckets: seconds ``head - horizon < s <= head``. The ring
    moves lazily, when ``add`` or ``window`` reads the clock; buckets that fall
    out are dropped. An event older than the window counts in the cumulative
    stats only; an event stamped after the head (the log writer's clock a few
    seconds ahead) counts in the head bucket. A clock stepping backwards does
    not move the head back: events stamped before ``head - horizon`` then count
    in the cumulative stats only until the clock catches up.

    Keys: at most ``max_keys`` distinct keys hold data at once (in the window
    or the cumulative stats); events for further keys are counted under
    ``OTHER_KEY`` ("(other)"), so a runaway key space (a log field that was not
    meant as a key) cannot exhaust memory. A key frees its place once it has
    left every bucket, the cumulative stats (after ``mark()``) and the
    evidence (after ``mark_evidence``).

    Evidence: from the first ``mark_evidence(at)`` on, a second cumulative
    accumulator per key takes every event stamped at or after ``at`` (its
    ``evidence_at``, else its ``at``, else the clock); ``mark_evidence`` empties
    it and moves the mark. Before the first mark there is none (``evidence()``
    is empty), so whole-file analysis does not pay for it. The stamp decides
    only whether an event is evidence: it moves no bucket.

    Bounds: at most ``horizon_seconds`` buckets, each with at most
    ``max_keys + 1`` stats, plus as many cumulative stats and as many evidence
    stats; each sketch holds at
    most its ``max_bins`` bins, and in practice no more bins than distinct
    latencies of its second.
    """

    def __init__(
        self,
        horizon_seconds: int = 300,
        clock: Callable[[], float] = time.time,
        max_keys: int = 4096,
    ) -> None:
        """Raises ValueError unless horizon_seconds >= 1 and max_keys >= 1."""
        if horizon_seconds < 1:
            raise ValueError(f"horizon_seconds must be at least 1, not {horizon_seconds!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self._horizon = int(horizon_seconds)
        self._clock = clock
        self._max_keys = max_keys
        # Slot s % horizon holds the bucket of second s, for head - horizon < s <= head;
        # every other slot is None (cleared as the head moves).
        self._ring: List[Optional[Dict[str, Stats]]] = [None] * self._horizon
        self._head: Optional[int] = None
        self._cumulative: Dict[str, Stats] = {}
        # None until the first mark_evidence: then the evidence since _evidence_mark.
        self._evidence: Optional[Dict[str, Stats]] = None
        self._evidence_mark = math.inf
        # Per key: how many containers (live buckets, the cumulative dict, the evidence dict) hold
        # it. A key with a count here is admitted; at zero it frees its place.
        self._holders: Dict[str, int] = {}

    @property
    def horizon_seconds(self) -> int:
        return self._horizon

    def add(
        self,
        key: str,
        status: Optional[int],
        seconds: Optional[float],
        count: int = 1,
        at: Optional[float] = None,
        evidence_at: Optional[float] = None,
    ) -> None:
        """Count ``count`` requests of ``key`` with this status and latency, stamped ``at``.

        ``evidence_at``: the request's own time when it differs from ``at``
        (the log's ``$msec`` where ``at`` is when the line was read); it only
        decides whether the event is evidence (not before the mark). A NaN
        ``evidence_at`` is no evidence.

        Raises ValueError for count < 1, an invalid latency (see ``Stats.add``)
        or a NaN/infinite ``at``; nothing is counted then.
        """
        now = self._clock()
        head = self._head
        if head is None or now >= head + 1:
            head = self._advance(now)
        stamp = now if at is None else at
        try:
            second = math.floor(stamp)
        except (ValueError, OverflowError):
            raise ValueError(f"cannot place an event stamped {stamp!r} in time") from None
        holders = self._holders
        if key not in holders and len(holders) >= self._max_keys:
            key = OTHER_KEY
        stats = self._cumulative.get(key)
        if stats is None:
            # Filled before it is stored, so a rejected event leaves no trace.
            stats = Stats()
            stats.add(status, seconds, count)
            self._cumulative[key] = stats
            holders[key] = holders.get(key, 0) + 1
        else:
            stats.add(status, seconds, count)
        evidence = self._evidence
        if evidence is not None and (stamp if evidence_at is None else evidence_at) >= self._evidence_mark:
            stats = evidence.get(key)
            if stats is None:
                stats = evidence[key] = Stats()
                holders[key] = holders.get(key, 0) + 1
            stats.add(status, seconds, count)
        if second > head:
            second = head
        elif second <= head - self._horizon:
            return
        slot = second % self._horizon
        bucket = self._ring[slot]
        if bucket is None:
            bucket = self._ring[slot] = {}
        stats = bucket.get(key)
        if stats is None:
            stats = bucket[key] = Stats()
            holders[key] = holders.get(key, 0) + 1
        stats.add(status, seconds, count)

    def _advance(self, now: float) -> int:
        """Move the head to the clock's second, dropping the buckets that fall out."""
        second = math.floor(now)
        head = self._head
        if head is None:
            self._head = second
            return second
        if second <= head:
            return head
        # Seconds head-horizon+1 .. second-horizon leave the window; a jump of a
        # whole horizon or more clears every slot once.
        first = head - self._horizon + 1
        for gone in range(first, first + min(second - head, self._horizon)):
            slot = gone % self._horizon
            bucket = self._ring[slot]
            if bucket is not None:
                for key in bucket:
                    self._release(key)
                self._ring[slot] = None
        self._head = second
        return second

    def _release(self, key: str) -> None:
        left = self._holders[key] - 1
        if left:
            self._holders[key] = left
        else:
            del self._holders[key]

    def window(self, key: str, seconds: float, now: Optional[float] = None) -> Stats:
        """Merged stats of ``key`` over the last ``seconds``, in whole buckets.

        The buckets included are those of the seconds ``s`` with
        ``now - seconds < s <= now`` that are still in the window: ``now=100.0,
        seconds=10`` covers events stamped from 91.0 up to (not including)
        101.0; ``now=100.5`` the same. ``now`` defaults to the clock. A key past
        ``max_keys`` has no stats of its own: ask for ``OTHER_KEY``. Raises
        ValueError unless 0 < seconds <= horizon_seconds.
        """
        if not 0 < seconds <= self._horizon:
            raise ValueError(f"window must be between 0 and {self._horizon} seconds, not {seconds!r}")
        clock_now = self._clock()
        head = self._advance(clock_now)
        if now is None:
            now = clock_now
        first = max(math.floor(now - seconds) + 1, head - self._horizon + 1)
        last = min(math.floor(now), head)
        result = Stats()
        for second in range(first, last + 1):
            bucket = self._ring[second % self._horizon]
            if bucket is not None:
                stats = bucket.get(key)
                if stats is not None:
                    result.merge(stats)
        return result

    def cumulative(self, key: str) -> Stats:
        """A copy of ``key``'s stats since the last ``mark()`` (or the start)."""
        stats = self._cumulative.get(key)
        return Stats() if stats is None else stats.copy()

    def mark(self) -> None:
        """Start the cumulative stats afresh for every key; the window is kept."""
        for key in self._cumulative:
            self._release(key)
        self._cumulative = {}

    def mark_evidence(self, at: float) -> None:
        """Start the evidence afresh for every key: events stamped before ``at`` are not evidence.

        The window and the cumulative stats are kept. Raises ValueError for a NaN or infinite ``at``.
        """
        if not math.isfinite(at):
            raise ValueError(f"cannot mark evidence at {at!r}")
        for key in self._evidence or ():
            self._release(key)
        self._evidence = {}
        self._evidence_mark = at

    @property
    def evidence_mark(self) -> Optional[float]:
        """The last ``mark_evidence``'s ``at``; None before the first."""
        return None if self._evidence is None else self._evidence_mark

    def evidence(self, key: str) -> Stats:
        """A copy of ``key``'s evidence: its events stamped at or after the last ``mark_evidence``."""
        stats = (self._evidence or {}).get(key)
        return Stats() if stats is None else stats.copy()

    def keys(self) -> List[str]:
        """The keys holding data in the window, the cumulative stats or the evidence, sorted."""
        return sorted(self._holders)

    def footprint(self) -> Dict[str, int]:
        """What is held, for status output and memory checks.

        ``buckets``: live one-second buckets; ``stats``: Stats objects in them,
        the cumulative dict and the evidence; ``bins``: sketch bins over all of those;
        ``keys``: distinct keys held. Costs a pass over every Stats.
        """
        live = [bucket for bucket in self._ring if bucket is not None]
        all_stats = [stats for bucket in live for stats in bucket.values()]
        all_stats.extend(self._cumulative.values())
        all_stats.extend((self._evidence or {}).values())
        return {
            "buckets": len(live),
            "stats": len(all_stats),
            "bins": sum(stats.latency.bin_count for stats in all_stats),
            "keys": len(self._holders),
        }
