"""Read nginx's error log for the lines that say a reload failed, and only those.

nginx copies text a client controls (request line, ``Host``, ``Referer``,
URIs) into its ``[error]`` and ``[info]`` lines, so looking for ``[emerg]``
anywhere in a line lets any HTTP client make every reload look failed. A line
counts only by its prefix, which nginx writes itself::

    2026/12/03 07:42:09 [emerg] 1234#1234: bind() to 127.0.0.1:80 failed ...

and only when the process that wrote it matters to the reload: the master
(which re-reads the config, binds and forks on SIGHUP) at ``emerg`` or
``alert``, and a process the reload started (a new worker) at ``emerg``, the
level at which a worker gives up. ``alert`` from workers is left out: a client
can provoke some (``worker_connections are not enough``) and a worker that
fails to start is caught by the worker count.

Lines are split on ``\\n`` alone (nginx ends every entry with it; Python's
``splitlines`` would also split on ``\\x0b``, ``\\x1c`` ... that a client may
put in a logged URI and so forge a line start).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import AbstractSet, Optional

from nginx_canary.text import printable

_PREFIX = re.compile(rb"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} \[(emerg|alert)\] (\d+)#\d+: ")
_READ_LIMIT = 1 << 20


@dataclass(frozen=True)
class ReloadWitness:
    """Which processes' failures mean the reload failed."""

    master_pid: int
    old_children: AbstractSet[int]

    def counts(self, level: bytes, pid: int) -> bool:
        if pid == self.master_pid:
            return True
        return level == b"emerg" and pid not in self.old_children


def size_of(path: Optional[str]) -> int:
    """The log's size now (0 when it is missing or not a file)."""
    if path is None:
        return 0
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def first_failure(path: Optional[str], offset: int, witness: ReloadWitness) -> Optional[str]:
    """The first failure line written to ``path`` since ``offset``, made safe to print; None if there is none.

    A file that shrank (rotated, truncated) is read from its start; an
    unreadable or missing one has no failure to tell. Never raises.
    """
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < offset:
                offset = 0
            start = max(offset - 1, 0)
            fh.seek(start)
            data = fh.read(_READ_LIMIT + (offset - start))
    except OSError:
        return None
    if offset > 0:
        # A line counts only from its start: without the newline before the
        # offset, the first piece is the tail of a line written earlier.
        if data[:1] != b"\n":
            cut = data.find(b"\n")
            data = b"" if cut < 0 else data[cut:]
        data = data[1:]
    for line in data.split(b"\n"):
        match = _PREFIX.match(line)
        if match and witness.counts(match.group(1), int(match.group(2))):
            return printable(line.decode("utf-8", "replace").strip())
    return None
