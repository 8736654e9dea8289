"""A mergeable, fixed-memory latency quantile sketch (DDSketch-style).

Positive values go into logarithmic bins: bin ``i`` holds the values in
``(gamma**(i-1), gamma**i]`` with ``gamma = (1+a)/(1-a)``, and a quantile that
falls in bin ``i`` is reported as ``2*gamma**i/(gamma+1)``, which is within a
relative error ``a`` of every value in the bin (Masson, Rim, Lee: "DDSketch",
VLDB 2019). Zero gets a count of its own because nginx logs ``0.000`` for
cached and very fast responses, and ``log(0)`` has no bin.

Sizes, for the default ``a = 0.01``: one bin spans 2 % (``ln(gamma)`` is
0.0200007), so the values from 1 µs to 1 day (86400 s) fall into at most
``ln(8.64e10) / ln(gamma) + 1``, i.e. 1260 bins, well under the default bound
of 2048; 1 ms .. 60 s takes at most 552.

Not thread-safe: one owner (the daemon's main loop) updates it.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left, bisect_right, insort
from typing import Dict, List, Optional, Tuple

_INF = math.inf
_log = math.log
_ceil = math.ceil

def _count_like(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# Subnormal floats carry too few significant bits for a relative-error bin;
# no latency is shorter than 2.2e-308 s, so they are counted as zero.
_MIN_POSITIVE = sys.float_info.min


class LatencySketch:
    """Quantiles of non-negative values (seconds) within a relative error.

    ``quantile(q)`` returns an estimate of the element at 0-based rank
    ``floor(q * (count - 1))`` of the sorted values, within ``relative_accuracy``
    of it, as long as the sketch has not collapsed (see below). ``count``,
    ``min`` and ``max`` are exact; ``sum`` is a float sum.

    Memory is bounded by ``max_bins`` logarithmic bins (plus the zero count).
    When a value needs a new bin beyond that bound, the lowest bins are merged
    into one, the floor bin, and every later value at or below it is counted
    there too. The low quantiles then lose their accuracy (they report the floor
    bin, clamped to ``min``) while the high ones, the ones that matter for p99
    and the max, keep it. With the default accuracy and bound this takes values
    spread over more than 17 decades, which latencies do not have.
    """

    __slots__ = (
        "_accuracy", "_max_bins", "_gamma", "_log_gamma", "_inv_log_gamma", "_log_scale",
        "_bins", "_keys", "_floor", "_zero", "_count", "_sum", "_min", "_max",
    )

    def __init__(self, relative_accuracy: float = 0.01, max_bins: int = 2048) -> None:
        """Raises ValueError unless 0 < relative_accuracy < 1 and max_bins >= 1."""
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be between 0 and 1, not {relative_accuracy!r}")
        if max_bins < 1:
            raise ValueError(f"max_bins must be at least 1, not {max_bins!r}")
        self._accuracy = relative_accuracy
        self._max_bins = max_bins
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._log_gamma = _log(self._gamma)
        self._inv_log_gamma = 1.0 / self._log_gamma
        # The estimate 2*gamma**i/(gamma+1) is computed as exp(i*log_gamma + log_scale)
        # so that the top bins near the float maximum do not overflow gamma**i.
        self._log_scale = _log(2.0 / (self._gamma + 1.0))
        self._bins: Dict[int, int] = {}
        # The bin indices in ascending order: quantiles walk them, and a collapse
        # finds the lowest ones without sorting the dict.
        self._keys: List[int] = []
        self._floor: Optional[int] = None
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = _INF
        self._max = -_INF

    @property
    def relative_accuracy(self) -> float:
        return self._accuracy

    @property
    def max_bins(self) -> int:
        return self._max_bins

    @property
    def count(self) -> int:
        """How many values were added (zeros included)."""
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def min(self) -> Optional[float]:
        """The smallest value added, exactly; None when empty."""
        return self._min if self._count else None

    @property
    def max(self) -> Optional[float]:
        """The largest value added, exactly; None when empty."""
        return self._max if self._count else None

    @property
    def bin_count(self) -> int:
        """Live logarithmic bins (never more than ``max_bins``); the zero count is not one."""
        return len(self._keys)

    @property
    def collapsed(self) -> bool:
        """Whether low bins were merged to respect ``max_bins`` (low quantiles are then coarse)."""
        return self._floor is not None

    def add(self, value: float, count: int = 1) -> None:
        """Add ``value`` (seconds) ``count`` times, at the cost of one add.

        Raises ValueError for a negative, NaN or infinite value, or count < 1;
        the sketch is unchanged then.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count!r}")
        if value >= _MIN_POSITIVE:
            try:
                index = _ceil(_log(value) * self._inv_log_gamma)
            except OverflowError:  # ceil(log(inf)): no separate test on the hot path
                raise ValueError("cannot add an infinite value") from None
            held = self._bins.get(index)
            if held is None:
                self._add_to_new_bin(index, count)
            else:
                self._bins[index] = held + count
        elif value >= 0.0:
            self._zero += count
        else:
            raise ValueError(f"cannot add {value!r}: values must be non-negative numbers")
        self._count += count
        self._sum += value * count
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def _add_to_new_bin(self, index: int, count: int) -> None:
        if self._floor is not None and index <= self._floor:
            self._bins[self._floor] += count
            return
        self._bins[index] = count
        insort(self._keys, index)
        if len(self._keys) > self._max_bins:
            self._collapse()

    def _collapse(self) -> None:
        """Merge the lowest bins into one so that at most max_bins remain."""
        keys = self._keys
        excess = len(keys) - self._max_bins
        floor = keys[excess]
        bins = self._bins
        moved = 0
        for index in keys[:excess]:
            moved += bins.pop(index)
        bins[floor] += moved
        del keys[:excess]
        self._floor = floor

    def merge(self, other: "LatencySketch") -> None:
        """Add every value of ``other`` to this sketch (``other`` is unchanged).

        Without a collapse, the result is the sketch of the concatenated data.
        The result keeps this sketch's ``max_bins``. Raises ValueError when the
        relative accuracies differ: their bins do not line up.
        """
        if other._accuracy != self._accuracy:
            raise ValueError(
                f"cannot merge sketches of relative accuracy {other._accuracy} and {self._accuracy}"
            )
        if other._count == 0:
            return
        if other._floor is not None and (self._floor is None or other._floor > self._floor):
            self._raise_floor(other._floor)
        bins = self._bins
        held_in = bins.get
        # A copy of the items, so that merging a sketch into itself terminates.
        for index, count in list(other._bins.items()):
            held = held_in(index)
            if held is None:
                self._add_to_new_bin(index, count)
            else:
                bins[index] = held + count
        self._zero += other._zero
        self._count += other._count
        self._sum += other._sum
        if other._min < self._min:
            self._min = other._min
        if other._max > self._max:
            self._max = other._max

    def _raise_floor(self, floor: int) -> None:
        """Fold this sketch's bins at or below ``floor`` into a bin at ``floor``."""
        keys = self._keys
        cut = bisect_left(keys, floor + 1)
        moved = 0
        for index in keys[:cut]:
            moved += self._bins.pop(index)
        del keys[:cut]
        self._bins[floor] = moved
        keys.insert(0, floor)
        self._floor = floor
        if len(keys) > self._max_bins:
            self._collapse()

    def quantile(self, q: float) -> Optional[float]:
        """The value at rank ``floor(q * (count - 1))`` of the sorted data, estimated.

        Rank 0 and the last rank return the exact min and max; other estimates
        are clamped to [min, max], which can only bring them closer. None when
        the sketch is empty. Raises ValueError unless 0 <= q <= 1.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be between 0 and 1, not {q!r}")
        if self._count == 0:
            return None
        rank = math.floor(q * (self._count - 1))
        if rank == 0:
            return self._min
        if rank >= self._count - 1:
            return self._max
        seen = self._zero
        if rank < seen:
            # The zero count also holds subnormals, which are all >= min.
            return max(0.0, self._min)
        bins = self._bins
        for index in self._keys:
            seen += bins[index]
            if rank < seen:
                try:
                    estimate = math.exp(index * self._log_gamma + self._log_scale)
                except OverflowError:
                    estimate = _INF
                return min(max(estimate, self._min), self._max)
        raise AssertionError("bin counts do not add up to count")  # pragma: no cover

    def count_at_most(self, bound: float) -> int:
        """How many values are at most ``bound``, as the bins see them (for histogram buckets).

        Every value ``<= bound`` is counted, a value equal to ``bound`` always;
        a value above ``bound`` is counted too when it shares ``bound``'s bin,
        i.e. is below ``bound * gamma`` (2 % above it at the default accuracy).
        So the count is exact when no value lies in ``(bound, bound * gamma)``,
        and exact anyway below ``min`` (0) and from ``max`` on (``count``).
        After a collapse the floor bin's values count as the floor bin's upper
        edge. Non-decreasing in ``bound``. Raises ValueError for NaN.
        """
        if bound != bound:
            raise ValueError("bound must be a number, not NaN")
        if self._count == 0 or bound < self._min:
            return 0
        if bound >= self._max:
            return self._count
        total = self._zero
        if bound >= _MIN_POSITIVE:
            # The same expression as add(), so a value equal to bound lands in the counted bin.
            index = _ceil(_log(bound) * self._inv_log_gamma)
            keys = self._keys
            bins = self._bins
            for key in keys[:bisect_right(keys, index)]:
                total += bins[key]
        return total

    def count_above(self, bound: float, *, surely: bool) -> int:
        """How many values are above ``bound``: ``surely`` above it, or possibly (as far as the bins can tell).

        A value sharing ``bound``'s bin (or the next one down) may count as
        possibly above it without surely being so: ``count_above(b, surely=True)
        <= truth <= count_above(b, surely=False)``, so a test can be
        conservative in either direction. Raises ValueError for NaN.
        """
        if surely:
            return self._count - self.count_at_most(bound)
        if bound != bound:
            raise ValueError("bound must be a number, not NaN")
        if bound < 0.0:
            return self._count
        if bound < _MIN_POSITIVE:
            return self._count - self._zero
        return self._count - self.count_at_most(bound / self._gamma)

    def rank_bounds(self, rank: int) -> Optional[Tuple[float, float]]:
        """``(low, high)`` between which the value at 0-based ``rank`` of the sorted data surely lies.

        The edges of its bin, clamped to the exact min and max (a collapsed
        floor bin reaches down to ``min``). None when the sketch is empty.
        Raises ValueError for a rank outside ``0 .. count - 1``.
        """
        if self._count == 0:
            return None
        if not 0 <= rank < self._count:
            raise ValueError(f"rank must be between 0 and {self._count - 1}, not {rank!r}")
        seen = self._zero
        if rank < seen:
            return (self._min, min(_MIN_POSITIVE, self._max))
        bins = self._bins
        for index in self._keys:
            seen += bins[index]
            if rank < seen:
                low = self._min if index == self._floor else math.exp((index - 1) * self._log_gamma)
                try:
                    high = math.exp(index * self._log_gamma)
                except OverflowError:
                    high = _INF
                return (min(max(low, self._min), self._max), min(max(high, self._min), self._max))
        raise AssertionError("bin counts do not add up to count")  # pragma: no cover

    def copy(self) -> "LatencySketch":
        """An independent sketch with the same contents."""
        clone = LatencySketch.__new__(LatencySketch)
        for name in LatencySketch.__slots__:
            setattr(clone, name, getattr(self, name))
        clone._bins = dict(self._bins)
        clone._keys = list(self._keys)
        return clone

    def to_wire(self) -> Dict[str, object]:
        """The sketch as JSON-ready data (bins as ``[index, count]`` pairs): :meth:`from_wire` reads it back."""
        return {
            "accuracy": self._accuracy, "max_bins": self._max_bins, "floor": self._floor, "zero": self._zero,
            "bins": [[index, self._bins[index]] for index in self._keys], "sum": self._sum,
            "min": None if self._count == 0 else self._min, "max": None if self._count == 0 else self._max,
        }

    @classmethod
    def from_wire(cls, data: object) -> "LatencySketch":
        """The sketch :meth:`to_wire` described (another host's, say).

        Raises ValueError when ``data`` is not such a description: wrong types,
        negative counts, bins out of order or beyond ``max_bins``, a floor
        that is not the lowest bin, min/max that contradict the counts.
        """
        if not isinstance(data, dict):
            raise ValueError("a latency sketch must be a JSON object")
        try:
            accuracy, max_bins, floor = float(data["accuracy"]), data["max_bins"], data["floor"]
            zero, bins, total = data["zero"], data["bins"], float(data["sum"])
            low, high = data["min"], data["max"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"latency sketch: missing or bad field ({exc})") from None
        if not _count_like(max_bins) or not _count_like(zero) or not isinstance(bins, list):
            raise ValueError("latency sketch: max_bins and zero must be whole numbers, bins a list")
        sketch = cls(accuracy, max_bins or 0)
        keys: List[int] = []
        for pair in bins:
            if (not isinstance(pair, list) or len(pair) != 2 or not _count_like(pair[1]) or pair[1] == 0
                    or isinstance(pair[0], bool) or not isinstance(pair[0], int)):
                raise ValueError(f"latency sketch: a bin must be [index, count > 0], not {pair!r}")
            if keys and pair[0] <= keys[-1]:
                raise ValueError("latency sketch: bins must be in ascending order of index")
            keys.append(pair[0])
            sketch._bins[pair[0]] = pair[1]
        if len(keys) > max_bins:
            raise ValueError(f"latency sketch: {len(keys)} bins, more than max_bins {max_bins}")
        if floor is not None and (not keys or floor != keys[0]):
            raise ValueError("latency sketch: the floor must be the lowest bin")
        count = zero + sum(sketch._bins.values())
        if (count == 0) != (low is None or high is None) or not math.isfinite(total) or total < 0:
            raise ValueError("latency sketch: min, max and sum do not match the counts")
        if count:
            low, high = float(low), float(high)
            if not 0.0 <= low <= high < _INF:
                raise ValueError("latency sketch: min and max must be 0 <= min <= max")
            sketch._min, sketch._max = low, high
        sketch._keys, sketch._floor, sketch._zero = keys, floor, zero
        sketch._count, sketch._sum = count, total
        return sketch

    def __repr__(self) -> str:
        return (
            f"LatencySketch(count={self._count}, min={self.min}, max={self.max}, "
            f"bins={len(self._keys)}, relative_accuracy={self._accuracy})"
        )
