"""When a log mostly fails to parse: a reader that sees no request must not pass for "no traffic".

A log whose lines do not fit the format (a format other than the one nginx
writes, a log written by another program) gives empty figures that look
like an idle upstream. The rule, the same for ``analyze`` and for a rollout:
the lines are *mostly unparsed* when more than half of them did not fit and
at least :data:`MIN_UNPARSED` of them did not. A few bad lines among good
ones (a line cut at a rotation, a stray write) never reach it.

``analyze`` applies it to every line of the files it read; ``analyze --follow``
to the most recent lines read, as a rollout does. A rollout applies
it to the most recent lines read since its step began, or since it was
started or resumed (:class:`UnparsedWatch`, at least :data:`RECENT_LINES` of
them when there are that many), so that a log fixed mid-step recovers once
that many good lines follow, and one fixed while paused at once.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional, Sequence, Tuple

from nginx_canary.logs.format import CompiledFormat
from nginx_canary.text import printable

#: Fewer unparsed lines than this never count as a log that mostly fails to parse.
MIN_UNPARSED = 10
#: A rollout judges the most recent lines: at least this many, whole batches.
RECENT_LINES = 200
#: Bytes of a sample line shown in a reason.
SAMPLE_BYTES = 160
#: Lines tried when looking for a sample (it is looked for once per step, and in ``analyze`` once).
SAMPLE_TRIES = 10_000


def mostly_unparsed(lines: int, unparsed: int) -> bool:
    """Whether ``unparsed`` of ``lines`` is more than half of them, and at least :data:`MIN_UNPARSED`."""
    return unparsed >= MIN_UNPARSED and 2 * unparsed > lines


def find_sample(compiled: CompiledFormat, lines: Sequence[bytes]) -> Optional[bytes]:
    """The first of ``lines`` (among the first :data:`SAMPLE_TRIES`) that does not fit ``compiled``, or None."""
    for line in lines[:SAMPLE_TRIES]:
        if compiled.parse(line) is None:
            return line
    return None


def describe(unparsed: int, lines: int, format_name: str, where: str, sample: Optional[bytes]) -> str:
    """One line: how many lines of ``where`` did not fit the format, and one of them."""
    if sample is None:
        example = "their values are none nginx writes, or they are over-long"
    else:
        text = sample.rstrip(b"\r\n")
        cut = "..." if len(text) > SAMPLE_BYTES else ""
        example = f"e.g. '{printable(text[:SAMPLE_BYTES].decode('utf-8', 'replace'))}{cut}'"
    return (f"{unparsed} of {lines} lines of {where} do not fit log format {format_name!r} ({example}); "
            f"check that the access_log writes this format")


class UnparsedWatch:
    """Counts of lines and unparsed lines of recent reads, and one unparsed line kept as a sample."""

    def __init__(self) -> None:
        self._batches: Deque[Tuple[int, int]] = deque()
        self._lines = 0
        self._unparsed = 0
        #: An unparsed line read since the last :meth:`reset` (None: none found yet).
        self.sample: Optional[bytes] = None

    def reset(self) -> None:
        """Forget every count and the sample: judge only what is read from now on."""
        self._batches.clear()
        self._lines = self._unparsed = 0
        self.sample = None

    def add(self, lines: int, unparsed: int) -> None:
        """One read's counts; the oldest reads are dropped once the rest hold :data:`RECENT_LINES` lines."""
        if lines <= 0:
            return
        self._batches.append((lines, unparsed))
        self._lines += lines
        self._unparsed += unparsed
        while len(self._batches) > 1 and self._lines - self._batches[0][0] >= RECENT_LINES:
            old_lines, old_unparsed = self._batches.popleft()
            self._lines -= old_lines
            self._unparsed -= old_unparsed

    def read(self, lines: int, unparsed: int, compiled: CompiledFormat, batch: Sequence[bytes]) -> None:
        """:meth:`add` one read's counts; keep a line of ``batch`` that does not fit as the sample if none is kept."""
        self.add(lines, unparsed)
        if unparsed > 0 and self.sample is None and batch:
            self.sample = find_sample(compiled, batch)

    def reason(self, format_name: str, where: str) -> Optional[str]:
        """The one-line reason (:func:`describe`) when the recent reads mostly failed to parse, else None."""
        if not self.mostly_unparsed():
            return None
        return describe(self._unparsed, self._lines, format_name, where, self.sample)

    def counts(self) -> Tuple[int, int]:
        """``(lines, unparsed)`` of the recent reads."""
        return self._lines, self._unparsed

    def mostly_unparsed(self) -> bool:
        """Whether the recent reads mostly failed to parse (see :func:`mostly_unparsed`)."""
        return mostly_unparsed(self._lines, self._unparsed)
