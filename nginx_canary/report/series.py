"""A compact, bounded time series per rollout run: canary vs stable, about one point per second.

The daemon calls :meth:`SeriesRecorder.record` once per second while a
rollout runs (and a few seconds after it ends) with the ``Stats.summary()``
of each group over the last second; :mod:`nginx_canary.report.charts` draws the
points. A point, as :meth:`SeriesRecorder.points` returns it::

    {"time": 1700000012.0, "canary_percent": 25, "state": "progressing",
     "canary": {"requests": 12, "errors_5xx": 0, "error_rate": 0.0, "p99": 0.012},
     "stable": {"requests": 36, "errors_5xx": 1, "error_rate": 0.0278, "p99": None}}

``time`` is the end of the span the point covers (the ``now`` given to
``record``), ``p99`` is in seconds (None without latency samples).

Bounds. A run keeps at most ``max_points`` points (default 21,600: six hours
at one point per second), in memory and on disk. When a run outgrows that,
its points are merged pairwise and the *resolution* doubles (2 s per point,
then 4 s, ...): the whole run stays, at a coarser grain, never just its end.
Merging adds the counts, recomputes ``error_rate`` and keeps the larger
``p99`` of the two (a quantile cannot be merged exactly from summaries: the
worse one is what a report must not hide); ``canary_percent`` and ``state``
are the later point's. Step changes are exact in the rollout's history, which
the report uses for its step timeline.

Layout, under the state directory::

    rollouts/NAME.series.jsonl   0600  a header line, then one point per line

The header is ``{"series": 1, "name": ..., "run_started": ..., "resolution": ...}``;
a point line is ``{"t": TIME, "p": PERCENT, "s": STATE, "c": [REQUESTS, ERRORS_5XX, P99], "b": [...]}``
(``c`` canary, ``b`` stable; about 80 bytes, so six hours is under 2 MB).
:meth:`SeriesRecorder.start_run` replaces the file atomically with a bare
header (a new run starts a new series); closed points are appended in
batches, every ``flush_every`` seconds (default 5) with one write, never
per point, and no fsync: these appends run on the daemon's loop, where a
disk flush on a busy host took up to 70 ms and made checks late, and the
points are worth less than that; :meth:`SeriesRecorder.flush` (end of a
run, shutdown) does fsync. A resolution change rewrites the file atomically.

Crash safety: a crash of the daemon loses the points not yet written (at
most the last ``flush_every`` seconds, plus the point still open); a crash
of the host may also lose the appends since the last fsync. A torn last line (a
crash during an append) is skipped by readers, and cut off before the next
append (:func:`nginx_canary.fsutil.append_lines`, as for the rollout's history).

Not thread-safe: one owner (the daemon's main loop) records and reads.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Dict, List, Optional, Tuple

from nginx_canary.errors import StateError
from nginx_canary.fsutil import append_lines, atomic_write
from nginx_canary.domain import percent_number, validate_name
from nginx_canary.statedir import FILE_MODE, StateDir

log = logging.getLogger(__name__)

SERIES_FORMAT = 1
#: Six hours at one point per second.
MAX_POINTS = 6 * 3600
#: Seconds between two appends to the file.
FLUSH_EVERY = 5.0
GROUPS = ("canary", "stable")

_KEYS = {"canary": "c", "stable": "b"}

# In memory a point is a tuple: (time, canary_percent, state, canary, stable),
# each group a tuple (requests, errors_5xx, p99 or None).
_Group = Tuple[int, int, Optional[float]]
_Point = Tuple[float, Any, Optional[str], _Group, _Group]


def series_path(state_dir: str, name: str) -> str:
    """``STATE_DIR/rollouts/NAME.series.jsonl``. Raises BadInputError for an invalid name."""
    return StateDir(state_dir).series(name)


def read_series(state_dir: str, name: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The header and the points of rollout ``name``'s last run, from disk; ``({}, [])`` without a file.

    Torn or corrupt lines are skipped (with a warning). Raises BadInputError
    for an invalid name, StateError when the file cannot be read or is of
    another format.
    """
    header, points = _load(series_path(state_dir, name))
    return header, [_expand(p) for p in points]


class SeriesRecorder:
    """Records and keeps the series of one rollout's current run.

    The constructor loads the series already on disk (a daemon restarted
    mid-run goes on with it). A file that cannot be read or is of another
    format is logged and replaced by the next write: a chart's data must never
    stop the daemon. Raises BadInputError for an invalid name, ValueError for
    a ``max_points`` below 2 or a negative ``flush_every``.
    """

    def __init__(self, state_dir: str, name: str, *, max_points: int = MAX_POINTS,
                 flush_every: float = FLUSH_EVERY) -> None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"max_points must be an integer of at least 2, not {max_points!r}")
        if not _is_number(flush_every) or flush_every < 0:
            raise ValueError(f"flush_every must be a non-negative number of seconds, not {flush_every!r}")
        self.name = validate_name(name)
        self.paths = StateDir(state_dir)
        self.path = self.paths.series(self.name)
        self.max_points = max_points
        self.flush_every = float(flush_every)
        try:
            header, points = _load(self.path)
        except StateError as exc:
            log.warning("rollout %s: series: %s; starting a new one", self.name, exc)
            header, points = {"unreadable": True}, []
        self.run_started: Optional[float] = header.get("run_started") if _is_number(header.get("run_started")) else None
        resolution = header.get("resolution")
        self.resolution: int = resolution if isinstance(resolution, int) and resolution >= 1 else 1
        self._points: List[_Point] = points  # closed points, oldest first
        self._unflushed = 0  # how many of the last closed points are not on disk yet
        self._open: Optional[_Point] = None  # the point of the current resolution bucket
        self._open_bucket: Optional[int] = None
        self._open_second: Optional[int] = None
        self._open_base: Optional[_Point] = None  # the open point before its latest second was added
        self._last_flush: Optional[float] = None
        self._has_file = bool(header) or bool(points)
        self._rewrite_needed = "unreadable" in header
        self._failing = False
        if len(self._points) > self.max_points:
            self._coarsen()

    # -- writing -----------------------------------------------------------------

    def start_run(self, now: float) -> None:
        """Forget the previous run and start an empty series at ``now`` (on the ``start`` command).

        Raises ValueError for a ``now`` that is not a finite number;
        StateError when the file cannot be replaced (the in-memory series is
        reset all the same; the next write tries again).
        """
        if not _is_number(now):
            raise ValueError(f"now must be a finite number of seconds, not {now!r}")
        self.run_started = float(now)
        self.resolution = 1
        self._points = []
        self._unflushed = 0
        self._open = None
        self._open_bucket = None
        self._open_second = None
        self._open_base = None
        self._last_flush = float(now)
        self._rewrite_needed = True
        self._rewrite()

    def record(self, now: float, *, canary: Dict[str, Any], stable: Dict[str, Any], canary_percent: Any,
               state: Optional[str]) -> None:
        """Add the figures of the second ending at ``now``; cheap (no I/O but a batched flush).

        ``canary`` / ``stable`` are ``Stats.summary()`` dicts (only
        ``requests``, ``errors_5xx`` and ``p99`` are read; missing ones count
        as 0 / None). ``canary_percent`` is a number or a percent string.
        Call it once per whole second: a second call within the same second
        (same ``floor(now)``) replaces that second's figures, it does not add
        to them (each call's summary covers the last second). Without a run
        started (no file, no :meth:`start_run`) one starts now. Disk errors
        are logged (once until a write works again), never raised: the points
        stay in memory, within ``max_points``.

        Raises ValueError for a ``now`` that is not a finite number or figures of the wrong type.
        """
        if not _is_number(now):
            raise ValueError(f"now must be a finite number of seconds, not {now!r}")
        now = float(now)
        point: _Point = (round(now, 3), _percent(canary_percent), None if state is None else str(state),
                         _group(canary, "canary"), _group(stable, "stable"))
        if self.run_started is None:
            self.run_started = now
            self._rewrite_needed = True
        if self._last_flush is None:
            self._last_flush = now
        second = math.floor(now)
        bucket = second // self.resolution
        if self._open is not None and second == self._open_second:
            # The same second again: the later figures saw more of it and replace the earlier ones.
            self._open = point if self._open_base is None else _merge(self._open_base, point)
        elif self._open is not None and bucket == self._open_bucket:
            self._open_base = self._open
            self._open = _merge(self._open, point)
        else:
            self._close_open()
            self._open, self._open_bucket, self._open_base = point, bucket, None
        self._open_second = second
        if now - self._last_flush >= self.flush_every or now < self._last_flush:
            self._last_flush = now
            try:
                self._write_pending()
            except StateError as exc:
                if not self._failing:
                    log.warning("rollout %s: series: %s; keeping the points in memory", self.name, exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("rollout %s: series: writing again", self.name)
                self._failing = False

    def flush(self) -> None:
        """Close the open point and write every point not yet on disk, with fsync (at the end of a run, at shutdown).

        Raises StateError when the file cannot be written (the points stay in memory).
        """
        self._close_open()
        self._write_pending(sync=True)
        self._failing = False

    # -- reading -----------------------------------------------------------------

    def points(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The run's points, oldest first (the open one included); the last ``limit`` if given.

        Raises ValueError for a negative limit.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")
        every = self._points + ([self._open] if self._open is not None else [])
        if limit is not None:
            every = every[len(every) - limit:] if limit else []
        return [_expand(p) for p in every]

    def header(self) -> Dict[str, Any]:
        """What the file's first line says: format, name, run start and resolution (seconds per point)."""
        return {"series": SERIES_FORMAT, "name": self.name, "run_started": self.run_started,
                "resolution": self.resolution}

    # -- internals -----------------------------------------------------------------

    def _close_open(self) -> None:
        if self._open is None:
            return
        self._points.append(self._open)
        self._unflushed += 1
        self._open = None
        self._open_bucket = None
        self._open_second = None
        self._open_base = None
        if len(self._points) > self.max_points:
            self._coarsen()

    def _coarsen(self) -> None:
        """Double the resolution until the points fit; the file is rewritten at the next write."""
        while len(self._points) > self.max_points:
            self.resolution *= 2
            merged: List[_Point] = []
            last_bucket = None
            for point in self._points:
                bucket = math.floor(point[0]) // self.resolution
                if merged and bucket == last_bucket:
                    merged[-1] = _merge(merged[-1], point)
                else:
                    merged.append(point)
                    last_bucket = bucket
            if len(merged) == len(self._points):
                # Points closer than the resolution (clock jumps): merge neighbours regardless.
                merged = [_merge(*self._points[i:i + 2]) if i + 1 < len(self._points) else self._points[i]
                          for i in range(0, len(self._points), 2)]
            self._points = merged
        if self._open is not None:
            self._open_bucket = math.floor(self._open[0]) // self.resolution
        self._rewrite_needed = True
        log.info("rollout %s: series: %d points, now %d s per point", self.name, len(self._points), self.resolution)

    def _write_pending(self, sync: bool = False) -> None:
        if self._rewrite_needed or not self._has_file:
            self._rewrite()
            return
        if not self._unflushed:
            return
        pending = self._points[len(self._points) - self._unflushed:]
        data = "".join(_line(p) for p in pending).encode("utf-8")
        if not append_lines(self.path, data, what="the series", sync=sync, create=False):
            self._rewrite()  # removed under us: write it all again
            return
        self._unflushed = 0

    def _rewrite(self) -> None:
        lines = [json.dumps(self.header(), sort_keys=True) + "\n"] + [_line(p) for p in self._points]
        self.paths.ensure_rollouts()
        atomic_write(self.path, "".join(lines).encode("utf-8"), mode=FILE_MODE)
        self._has_file = True
        self._rewrite_needed = False
        self._unflushed = 0


# -- encoding ------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(value: Any) -> Any:
    """A JSON number for a percent given as a number or a string ("12.5"); None stays None."""
    if value is None:
        return None
    try:
        return percent_number(value)
    except ValueError as exc:
        raise ValueError(f"canary_percent {exc}") from None


def _group(summary: Any, label: str) -> _Group:
    if summary is None:
        return (0, 0, None)
    if not isinstance(summary, dict):
        raise ValueError(f"{label} must be a Stats.summary() dict, not {type(summary).__name__}")
    requests = summary.get("requests") or 0
    errors = summary.get("errors_5xx") or 0
    p99 = summary.get("p99")
    for key, value in (("requests", requests), ("errors_5xx", errors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{label}.{key} must be a non-negative integer, not {value!r}")
    if p99 is not None and (not _is_number(p99) or p99 < 0):
        raise ValueError(f"{label}.p99 must be a non-negative number of seconds or None, not {p99!r}")
    return (requests, errors, None if p99 is None else float(p99))


def _merge(a: _Point, b: _Point) -> _Point:
    """``a`` then ``b`` as one point: counts added, the larger p99, ``b``'s time, percent and state."""
    return (b[0], b[1], b[2], _merge_group(a[3], b[3]), _merge_group(a[4], b[4]))


def _merge_group(a: _Group, b: _Group) -> _Group:
    p99s = [v for v in (a[2], b[2]) if v is not None]
    return (a[0] + b[0], a[1] + b[1], max(p99s) if p99s else None)


def _line(point: _Point) -> str:
    record = {"t": point[0], "p": point[1], "s": point[2], "c": list(point[3]), "b": list(point[4])}
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def _expand(point: _Point) -> Dict[str, Any]:
    result: Dict[str, Any] = {"time": point[0], "canary_percent": point[1], "state": point[2]}
    for label, group in zip(GROUPS, point[3:5]):
        requests, errors, p99 = group
        result[label] = {"requests": requests, "errors_5xx": errors,
                         "error_rate": errors / requests if requests else 0.0, "p99": p99}
    return result


def _parse_point(raw: bytes) -> Optional[_Point]:
    if not raw.endswith(b"\n"):
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or not _is_number(data.get("t")):
            return None
        groups = []
        for key in ("c", "b"):
            value = data[key]
            if not isinstance(value, list) or len(value) != 3:
                return None
            groups.append(_group({"requests": value[0], "errors_5xx": value[1], "p99": value[2]}, key))
        percent = _percent(data.get("p"))
        state = data.get("s")
        return (float(data["t"]), percent, state if isinstance(state, str) else None, groups[0], groups[1])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _load(path: str) -> Tuple[Dict[str, Any], List[_Point]]:
    """Header and points of a series file; ``({}, [])`` when there is none. Raises StateError."""
    header: Dict[str, Any] = {}
    points: List[_Point] = []
    skipped = 0
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if number == 1 and raw.startswith(b'{"') and b'"series"' in raw:
                    try:
                        header = json.loads(raw.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        header = {}
                    if not isinstance(header, dict):
                        header = {}
                    if header and header.get("series") != SERIES_FORMAT:
                        raise StateError(f"series of format {header.get('series')!r}, this nginx-canary reads "
                                         f"format {SERIES_FORMAT}", file=path)
                    if header:
                        continue
                point = _parse_point(raw)
                if point is None:
                    skipped += 1
                else:
                    points.append(point)
    except (FileNotFoundError, NotADirectoryError):
        return {}, []
    except OSError as exc:
        raise StateError(f"cannot read the series: {exc.strerror or exc}", file=path) from exc
    if skipped:
        log.warning("%s: skipped %d torn or corrupt series line(s)", path, skipped)
    return header, points




