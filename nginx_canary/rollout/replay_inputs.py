"""What ``replay`` feeds the real rollout state machine: recorded log lines in time order, and stand-ins for nginx.

* :func:`stamped_lines` reads recorded access logs (plain or .gz) and yields
  each line with its own time: ``$msec`` when the format has it, else
  ``$time_iso8601`` or ``$time_local`` (whole seconds).
* :class:`ReplayTraffic` is the :class:`~nginx_canary.rollout.ports.TrafficSource`
  fed from those lines up to the simulated now.
* :class:`SimulatedApplier` is the :class:`~nginx_canary.rollout.ports.SplitApplier`
  that touches no nginx: a recorded log cannot show what a weight change would
  have done, so a step is "applied" at the simulated time and nothing else.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from nginx_canary.domain import percent_text
from nginx_canary.errors import BadInputError
from nginx_canary.logs.analyze import GROUP, AddressBook, Analyzer
from nginx_canary.logs.format import CompiledFormat, upstream_fields
from nginx_canary.logs.reader import block_batches
from nginx_canary.logs.window import Stats, WindowedStats

_MONTHS = {m: i + 1 for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}
#: One recorded request: (its time, the line).
Stamped = Tuple[float, bytes]


def time_field(compiled: CompiledFormat) -> str:
    """The variable that stamps each line: ``msec``, else ``time_iso8601``, else ``time_local``.

    Raises BadInputError (LogFormatError) when the format has none of them, or lacks what the analysis needs.
    """
    found = upstream_fields(compiled).time
    if found is None:
        raise BadInputError(f"log format {compiled.spec.name!r} has no $msec, $time_iso8601 or $time_local: "
                            "replay needs each request's time (the shipped 'canary' format logs $msec)")
    return found


def parse_stamp(name: str, value: str) -> Optional[float]:
    """Seconds since the epoch from the value of ``$msec``, ``$time_iso8601`` or ``$time_local``; None if unreadable."""
    try:
        if name == "msec":
            stamp = float(value)
            return stamp if math.isfinite(stamp) else None
        if name == "time_iso8601":
            return datetime.fromisoformat(value).timestamp()
        # 10/Oct/2000:13:55:36 -0700
        day, month, rest = value.split("/", 2)
        year, hh, mm, ss_zone = rest.split(":", 3)
        ss, zone = ss_zone.split(" ")
        sign = -1 if zone[0] == "-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
        return datetime(int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss),
                        tzinfo=timezone(offset)).timestamp()
    except (ValueError, KeyError, IndexError, OverflowError):
        return None


class LogLines:
    """The lines of recorded log files merged in time order, and how many could not be stamped.

    Each file is read in its own order (nginx writes a line when its request
    ends, so a file is in time order but for a few milliseconds between
    workers); the files are merged by the lines' stamps.
    """

    def __init__(self, paths: Sequence[str], compiled: CompiledFormat) -> None:
        """Raises BadInputError: no file given, or one cannot be opened (see :func:`check_readable`)."""
        if not paths:
            raise BadInputError("give at least one LOGFILE")
        for path in paths:
            check_readable(path)
        self.paths = list(paths)
        self.compiled = compiled
        self.field = time_field(compiled)
        self.lines = 0
        self.unstamped = 0

    def __iter__(self) -> Iterator[Stamped]:
        """Raises BadInputError when a file cannot be read (not valid gzip, I/O error)."""
        return heapq.merge(*(self._one(path) for path in self.paths), key=lambda item: item[0])

    def _one(self, path: str) -> Iterator[Stamped]:
        name = (self.field,)
        for block, overlong in block_batches(path):
            self.lines += overlong
            self.unstamped += overlong
            lines = block.splitlines(keepends=True)
            rows, misfits = self.compiled.extract(lines, name)
            if misfits:  # which lines did not fit: look again one by one
                each = [self.compiled.extract([line], name)[0] for line in lines]
                pairs = [(line, found[0]) for line, found in zip(lines, each) if found]
            else:
                pairs = list(zip(lines, rows))
            self.lines += len(lines)
            self.unstamped += len(lines) - len(pairs)
            for line, row in pairs:
                stamp = parse_stamp(self.field, self.compiled.decode(row[0]))
                if stamp is None:
                    self.unstamped += 1
                else:
                    yield stamp, line


def check_readable(path: str) -> None:
    """Raises BadInputError unless ``path`` is a file this process can open (a .gz one must start like gzip)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError as exc:
        raise BadInputError(f"cannot read log file {path}: {exc.strerror}") from exc
    if path.endswith(".gz") and head and head != b"\x1f\x8b":
        raise BadInputError(f"cannot read log file {path}: not a gzip file")


class _SimClock:
    """The simulated now, read by the windows."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ReplayTraffic:
    """A TrafficSource fed from recorded lines: :meth:`advance` feeds every line stamped up to the simulated now."""

    def __init__(self, compiled: CompiledFormat, book: AddressBook, upstream: str, lines: Iterator[Stamped]) -> None:
        """Raises LogFormatError when the format lacks what the analysis needs (reads the first line)."""
        self._clock = _SimClock()
        # Only the evidence is read: the sliding window is kept as short as it can be.
        self._windows = WindowedStats(horizon_seconds=1, clock=self._clock)
        self.analyzer = Analyzer(compiled, book, self._windows, only_upstream=upstream)
        self._lines = lines
        self._next: Optional[Stamped] = next(lines, None)
        self.first_stamp = None if self._next is None else self._next[0]
        self.last_stamp = self.first_stamp
        #: Lines fed so far.
        self.fed = 0

    @property
    def exhausted(self) -> bool:
        """Whether every line has been fed."""
        return self._next is None

    def advance(self, now: float) -> None:
        """Feed the lines stamped up to ``now``, in batches of one second of stamps each.

        A batch is stamped with the latest stamp fed so far: lines a few ms out
        of order (two workers) count as the latest of them.

        Raises BadInputError when a file cannot be read further.
        """
        self._clock.now = max(self._clock.now, now)
        batch: List[bytes] = []
        second: Optional[int] = None
        while self._next is not None and self._next[0] <= now:
            stamp, line = self._next
            if second is not None and math.floor(stamp) != second:
                self.analyzer.feed(batch, at=self.last_stamp)
                batch = []
            second = math.floor(stamp)
            batch.append(line)
            self.fed += 1
            self.last_stamp = max(self.last_stamp or stamp, stamp)
            self._next = next(self._lines, None)
        if batch:
            self.analyzer.feed(batch, at=self.last_stamp)

    def begin_step(self, at: float) -> None:
        """Evidence for the step that took effect at ``at`` starts empty: requests stamped before ``at`` do not count."""
        self._windows.mark_evidence(at)

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        """``(canary, stable)`` since the last begin_step, up to ``now`` (independent copies)."""
        self._clock.now = max(self._clock.now, now)
        return self._windows.evidence(GROUP + "canary"), self._windows.evidence(GROUP + "stable")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SimulatedApplier:
    """A SplitApplier that changes nothing: one pretend file whose "contents" are the canary's share."""

    def __init__(self, upstream: str) -> None:
        self.path = f"(replay of upstream {upstream})"
        self.percent = "0"
        self.snapshots: Dict[str, str] = {}

    def _files(self, percent: str) -> Dict[str, str]:
        return {self.path: _sha(percent)}

    def begin(self, rollout_name: str) -> str:
        snapshot_id = f"replay-{len(self.snapshots) + 1}"
        self.snapshots[snapshot_id] = self.percent
        return snapshot_id

    def plan(self, percent: Fraction) -> Dict[str, str]:
        return self._files(percent_text(percent))

    def apply(self, percent: Fraction) -> Dict[str, str]:
        self.percent = percent_text(percent)
        return self.files_now()

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        self.percent = self.snapshots[snapshot_id]
        return self.files_now()

    def restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        return self.restore(snapshot_id)

    def plan_restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        return self._files(self.snapshots[snapshot_id])

    def snapshot_files(self, snapshot_id: str) -> Dict[str, str]:
        return self._files(self.snapshots[snapshot_id])

    def files_now(self) -> Dict[str, str]:
        return self._files(self.percent)

    def hashes_of(self, paths: Sequence[str]) -> Dict[str, str]:
        files = self.files_now()
        return {path: files.get(path, "") for path in paths}
