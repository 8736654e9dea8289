"""The "split" strategy: a format that is a run of variables joined by one separator byte no value can contain.

The shipped ``canary`` format (tabs under escape=default) is one. A line is
parsed with ``bytes.split`` driven by C-level ``map`` calls, so no Python code
runs per line. (The analyzer reads split formats through the C accelerator of
:mod:`nginx_canary.logs.counting` when it is built, which finds the same
fields from a :class:`SplitLayout`; :meth:`SplitStrategy.extract` is the
pure-Python path and the reference it is tested against.)
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress, repeat
from operator import itemgetter, methodcaller
from typing import Dict, List, Optional, Sequence, Tuple

from nginx_canary.logs.syntax import Segment, value_syntax


@dataclass(frozen=True)
class SplitLayout:
    """Where some variables sit in a "split" line: ``prefix`` + fields joined by ``sep`` + ``suffix``.

    ``fields`` is how many fields a line has; ``wanted`` the field index of
    each variable asked for, in the order asked.
    """

    sep: bytes
    fields: int
    wanted: Tuple[int, ...]
    prefix: bytes
    suffix: bytes


class SplitStrategy:
    """Reads the values of a ``[prefix] $a SEP $b ... [suffix]`` format by splitting lines at ``SEP``."""

    def __init__(self, sep: bytes, prefix: bytes, suffix: bytes, order: List[str]) -> None:
        self._sep, self._prefix, self._suffix = sep, prefix, suffix
        self._fields = len(order)
        self._index: Dict[str, int] = {}
        for i, name in enumerate(order):
            self._index.setdefault(name, i)

    def layout(self, names: Sequence[str]) -> SplitLayout:
        """Where ``names`` (variables of the format) sit in a line."""
        return SplitLayout(self._sep, self._fields, tuple(self._index[n] for n in names), self._prefix, self._suffix)

    def extract(self, lines: List[bytes], names: Sequence[str]) -> Tuple[List[Tuple[bytes, ...]], int]:
        """The raw values of ``names`` (variables of the format) for each line that fits, and how many did not."""
        sep, fields = self._sep, self._fields
        total = len(lines)
        wanted = [self._index[n] for n in names]
        last_wanted = max(wanted, default=0)
        # Every step below is one C-level pass over the chunk: no Python code
        # runs per line, which is what makes this path fast.
        counts = list(map(bytes.count, lines, repeat(sep)))
        if counts.count(fields - 1) != total:
            lines = list(compress(lines, map((fields - 1).__eq__, counts)))
        if self._suffix or last_wanted == fields - 1:
            lines = _strip_newlines(lines)
        if self._prefix or self._suffix:
            lines = self._unframe(lines)
        bad = total - len(lines)
        if not wanted:
            return [()] * len(lines), bad
        # Splitting no further than the last wanted field saves objects.
        parts = map(methodcaller("split", sep, last_wanted + 1), lines) if last_wanted < fields - 1 else map(
            methodcaller("split", sep), lines
        )
        if len(wanted) == 1:
            return list(zip(map(itemgetter(wanted[0]), parts))), bad
        return list(map(itemgetter(*wanted), parts)), bad

    def _unframe(self, lines: List[bytes]) -> List[bytes]:
        prefix, suffix = self._prefix, self._suffix
        if prefix:
            lines = list(compress(lines, map(methodcaller("startswith", prefix), lines)))
        if suffix:
            lines = list(compress(lines, map(methodcaller("endswith", suffix), lines)))
        return list(map(itemgetter(slice(len(prefix), -len(suffix) if suffix else None)), lines))


def _strip_newlines(lines: List[bytes]) -> List[bytes]:
    lines = list(map(methodcaller("removesuffix", b"\n"), lines))
    return list(map(methodcaller("removesuffix", b"\r"), lines))


def split_strategy(segments: List[Segment], escape: str) -> Optional[SplitStrategy]:
    """The split parser of a format ``[prefix] $a SEP $b ... [suffix]`` whose values never hold ``SEP``; else None."""
    body = list(segments)
    prefix = body.pop(0) if body and isinstance(body[0], bytes) else b""
    suffix = body.pop() if body and isinstance(body[-1], bytes) else b""
    names = body[0::2]
    seps = body[1::2]
    if len(names) < 2 or not all(isinstance(n, str) for n in names):
        return None
    if not all(isinstance(s, bytes) and len(s) == 1 for s in seps) or len(set(seps)) != 1:
        return None
    sep = seps[0]
    assert isinstance(sep, bytes)
    if sep in (b"\n", b"\r") or sep in prefix or sep in suffix:
        return None
    if not all(sep[0] in value_syntax(n, escape).never for n in names):  # type: ignore[arg-type]
        return None
    return SplitStrategy(sep, prefix, suffix, [n for n in names if isinstance(n, str)])
