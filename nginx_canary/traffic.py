"""The rollout's eyes: a :class:`nginx_canary.rollout.TrafficSource` fed live from nginx's access log."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from nginx_canary.logs.analyze import GROUP, AddressBook, Analyzer
from nginx_canary.logs.format import FormatSpec, compile_format
from nginx_canary.logs.tail import LogTailer
from nginx_canary.logs.window import Stats, WindowedStats
from nginx_canary.nginx.conf import NginxConfig


class LogTraffic:
    """Follows one access log and keeps canary/stable figures of one upstream in one-second buckets.

    ``poll(now)`` reads what nginx wrote since the last call (never blocks);
    ``groups(window, now)`` answers from memory, never from the file.
    """

    def __init__(self, config: NginxConfig, upstream: str, canary: Sequence[str], log_path: str, spec: FormatSpec, *,
                 horizon_seconds: int = 300, from_end: bool = True, watch: bool = True,
                 watch_writes: bool = False) -> None:
        """Raises LogFormatError when the format lacks what the analysis needs, LogReadError for an unreadable log.

        The caller polls on its own timer, so by default watchdog reports only
        rotations, not each write (``watch_writes``; ``wait()`` then wakes on
        rotations and timeouts only).
        """
        book = AddressBook.from_config(config, upstream=upstream, canary=canary)
        self._clock_now = 0.0
        self.windows = WindowedStats(horizon_seconds=horizon_seconds, clock=lambda: self._clock_now)
        self.analyzer = Analyzer(compile_format(spec), book, self.windows, only_upstream=upstream)
        self.tailer = LogTailer(log_path, from_end=from_end, watch=watch, watch_writes=watch_writes)
        self._overlong = 0

    def poll(self, now: float) -> int:
        """Count the lines nginx wrote since the last poll as seen at ``now``; return how many."""
        self._clock_now = now
        lines = self.tailer.read_lines()
        if self.tailer.overlong != self._overlong:
            self.analyzer.count_unparsed(self.tailer.overlong - self._overlong)
            self._overlong = self.tailer.overlong
        if lines:
            self.analyzer.feed(lines, at=now)
        return len(lines)

    def wait(self, timeout: float) -> None:
        """Block until the log changes or ``timeout`` passes."""
        self.tailer.wait(timeout)

    def groups(self, window_seconds: float, now: float) -> Tuple[Stats, Stats]:
        """``(canary, stable)`` over the ``window_seconds`` ending at ``now``."""
        self._clock_now = max(self._clock_now, now)
        return (self.windows.window(GROUP + "canary", window_seconds, now),
                self.windows.window(GROUP + "stable", window_seconds, now))

    def mark(self) -> None:
        """Start the cumulative figures afresh (the window is unaffected)."""
        self.windows.mark()

    def close(self) -> None:
        self.tailer.close()

    def __enter__(self) -> "LogTraffic":
        return self

    def __exit__(self, *exc: Optional[object]) -> None:
        self.close()
