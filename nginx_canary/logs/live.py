"""The rollout's eyes: a :class:`nginx_canary.rollout.ports.TrafficSource` fed live from nginx's access log."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from nginx_canary.logs.analyze import GROUP, AddressBook, Analyzer, unmarked_forcing
from nginx_canary.logs.format import FormatSpec, compile_format
from nginx_canary.logs.health import UnparsedWatch, describe, find_sample
from nginx_canary.logs.counting import Buffer
from nginx_canary.logs.logfile import LineCollector
from nginx_canary.logs.tail import LogTailer
from nginx_canary.logs.window import Stats, WindowedStats
from nginx_canary.nginx.model import NginxConfig

log = logging.getLogger(__name__)

#: Bytes one poll reads at most (a few tens of ms of parsing): the loop polls again at once while more is there,
#: so checks and commands get their turn between two reads.
READ_PER_POLL = 16 << 20
#: Seconds of polling back to back without catching up after which the reader skips to the end (see ``poll``).
MAX_BEHIND = 1.0


class LogTraffic:
    """Follows one access log and keeps canary/stable figures of one upstream in one-second buckets.

    ``poll(now)`` reads what nginx wrote since the last call, up to
    ``read_per_poll`` bytes (never blocks); while :attr:`behind`, the caller
    polls again at once. ``groups(window, now)`` and ``evidence(now)`` answer
    from memory, never from the file.

    Evidence: ``begin_step(at)`` empties it; from then on every request read
    whose stamp is not before ``at`` counts in ``evidence(now)`` as soon as
    its line is read. A request's stamp is its ``$msec`` (when it ended) when
    the format has it, clamped to the poll's ``now`` (see
    :func:`nginx_canary.logs.analyze.request_end`), else the poll's ``now``.
    ``at`` and the ``now`` of ``poll`` are wall-clock seconds (as ``$msec``).

    ``unparsed_reason()`` says when the recent lines read since the step
    began mostly failed to parse (:mod:`nginx_canary.logs.health`), with one
    of them: the rollout pauses rather than reads that as "no traffic".

    The window's lines are stamped with the time they are read, so a reader that lags
    describes the past: when polls have left bytes unread for more than
    ``max_behind`` seconds in a row (nginx writes faster than this host can
    parse, or the loop was held up and the backlog is too big to read in
    time), the reader skips to the end of the log, logs a warning saying how
    much it skipped, and counts it (``skipped_bytes``, ``skips``).
    """

    def __init__(self, config: NginxConfig, upstream: str, canary: Sequence[str], log_path: str, spec: FormatSpec, *,
                 horizon_seconds: int = 300, from_end: bool = True, watch: bool = True,
                 watch_writes: bool = False, read_per_poll: int = READ_PER_POLL, max_behind: float = MAX_BEHIND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Raises LogFormatError when the format lacks what the analysis needs, LogReadError for an unreadable log.

        The caller polls on its own timer, so by default watchdog reports only
        rotations, not each write (``watch_writes``; ``wait()`` then wakes on
        rotations and timeouts only). ``clock`` (seconds) times ``max_behind``.
        ValueError for a ``read_per_poll`` below 1 or a negative ``max_behind``.
        """
        if read_per_poll < 1 or max_behind < 0:
            raise ValueError("read_per_poll must be at least 1 and max_behind at least 0")
        book = AddressBook.from_config(config, upstream=upstream, canary=canary)
        self._clock_now = 0.0
        self.windows = WindowedStats(horizon_seconds=horizon_seconds, clock=lambda: self._clock_now)
        self.analyzer = Analyzer(compile_format(spec), book, self.windows, only_upstream=upstream,
                                 stamp_requests=True)
        self.unparsed = UnparsedWatch()
        for warning in self.analyzer.warnings + unmarked_forcing(config, upstream, canary, self.analyzer):
            log.warning("upstream %s: %s", upstream, warning)
        self.tailer = LogTailer(log_path, from_end=from_end, watch=watch, watch_writes=watch_writes,
                                max_read_bytes=read_per_poll, chunk_bytes=min(1 << 20, read_per_poll))
        self.path = log_path
        self.max_behind = max_behind
        self._clock = clock
        self._behind_since: Optional[float] = None
        self._overlong = 0

    @property
    def behind(self) -> bool:
        """Whether the last poll left bytes unread (poll again now rather than after a sleep)."""
        return self.tailer.more_pending

    @property
    def skipped_bytes(self) -> int:
        return self.tailer.skipped_bytes

    @property
    def skips(self) -> int:
        return self.tailer.skips

    def poll(self, now: float) -> int:
        """Count the lines nginx wrote since the last poll as seen at ``now``; return how many.

        Skips to the end of the log when polls have left bytes unread for
        more than ``max_behind`` seconds in a row (see the class docstring).
        """
        self._clock_now = now
        analyzer = self.analyzer
        seen, unparsed = analyzer.lines, analyzer.unparsed
        fed = 0

        def count(block: Buffer) -> None:
            nonlocal fed
            before, misfits = analyzer.lines, analyzer.unparsed
            analyzer.feed_block(block, at=now)
            fed += analyzer.lines - before
            if analyzer.unparsed > misfits and self.unparsed.sample is None:
                collected = LineCollector()
                collected(block)
                self.unparsed.sample = find_sample(analyzer.compiled, collected.lines)

        self.tailer.read_blocks(count)
        if self.tailer.overlong != self._overlong:
            analyzer.count_unparsed(self.tailer.overlong - self._overlong)
            self._overlong = self.tailer.overlong
        self.unparsed.add(analyzer.lines - seen, analyzer.unparsed - unparsed)
        if not self.tailer.more_pending:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = self._clock()
        elif self._clock() - self._behind_since > self.max_behind:
            self._behind_since = None
            skipped = self.tailer.skip_to_end()
            log.warning("access log %s: skipped %.1f MiB of it: the reader fell behind (still %g s after it "
                        "started reading back to back); figures go on from its end", self.path, skipped / 2**20,
                        self.max_behind)
        return fed

    def reading(self) -> Dict[str, int]:
        """How the reading goes, for ``status``: bytes unread now, bytes skipped so far and in how many skips."""
        return {"backlog_bytes": self.tailer.backlog(), "skipped_bytes": self.tailer.skipped_bytes,
                "skips": self.tailer.skips}

    def groups(self, window_seconds: float, now: float) -> Tuple[Stats, Stats]:
        """``(canary, stable)`` over the ``window_seconds`` ending at ``now``."""
        self._clock_now = max(self._clock_now, now)
        return (self.windows.window(GROUP + "canary", window_seconds, now),
                self.windows.window(GROUP + "stable", window_seconds, now))

    def begin_step(self, at: float) -> None:
        """Evidence for the step that took effect at ``at`` starts empty: requests stamped before ``at`` do not count.

        Raises ValueError for a NaN or infinite ``at``.
        """
        self.windows.mark_evidence(at)
        self.unparsed.reset()

    def unparsed_reason(self) -> Optional[str]:
        """Why the step cannot be judged when the recent lines mostly failed to parse, else None.

        The reason names the log, the format and one of those lines. Once
        given, counting starts again: the same lines are not reported twice.
        """
        if not self.unparsed.mostly_unparsed():
            return None
        lines, unparsed = self.unparsed.counts()
        reason = describe(unparsed, lines, self.analyzer.compiled.spec.name, f"access log {self.path}",
                          self.unparsed.sample)
        self.unparsed.reset()
        return reason

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        """``(canary, stable)`` since the last ``begin_step``, as read up to ``now`` (independent copies).

        Every line read so far counts (its stamp is at most the ``now`` of the
        poll that read it); both are empty before the first ``begin_step``.
        """
        self._clock_now = max(self._clock_now, now)
        return self.windows.evidence(GROUP + "canary"), self.windows.evidence(GROUP + "stable")

    def close(self) -> None:
        self.tailer.close()

    def __enter__(self) -> "LogTraffic":
        return self

    def __exit__(self, *exc: Optional[object]) -> None:
        self.close()

