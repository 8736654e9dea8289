"""The "regex" strategy: a full-line ``re`` pattern, for any format the "split" strategy cannot read.

That pattern never backtracks more than linearly: a value whose following
literal can occur inside it is matched first-fit (an atomic group, written as
a capturing lookahead plus a back-reference because ``(?>...)`` needs Python
3.11), and only a line that fails first-fit and is short enough for its
number of candidate split points gets a second, backtracking try.
"""

from __future__ import annotations

import re
from operator import methodcaller
from typing import Dict, List, Optional, Sequence, Tuple

from nginx_canary.logs.anchors import right_anchored
from nginx_canary.logs.syntax import ENTRY_BYTES, Segment, value_syntax

# A line that fails the first-fit pattern gets the backtracking pattern only if
# its length times the product of (candidate split points + 1) over the
# ambiguous values, a bound on the steps that retry can take, is at most this:
# a long or separator-riddled junk line costs one linear pass and no more.
_BACKTRACK_STEPS = 50_000

_NEWLINE_TAIL = rb"(?:\r?\n)?"


class RegexStrategy:
    """Reads the values of any format by matching whole lines (see the module docstring)."""

    def __init__(self, segments: List[Segment], escape: str) -> None:
        self._first_fit, self._backtracking, self._ambiguous, self._groups = _regexes(segments, escape)

    def extract(self, lines: List[bytes], names: Sequence[str]) -> Tuple[List[Tuple[bytes, ...]], int]:
        """The raw values of ``names`` (variables of the format) for each line that fits, and how many did not."""
        matches = list(map(self._first_fit.fullmatch, lines))
        if self._backtracking is not None and None in matches:
            for i, m in enumerate(matches):
                if m is None:
                    matches[i] = self._retry(lines[i])
        good = list(filter(None, matches)) if None in matches else matches
        bad = len(lines) - len(good)
        groups = [self._groups[n] for n in names]
        if not groups:
            return [()] * len(good), bad
        if len(groups) == 1:
            return list(zip(map(methodcaller("group", groups[0]), good))), bad
        return list(map(methodcaller("group", *groups), good)), bad

    def _retry(self, line: bytes) -> "Optional[re.Match[bytes]]":
        assert self._backtracking is not None
        steps = len(line) + 1
        for literal in self._ambiguous:
            steps *= (line.count(literal) if literal else len(line)) + 1
            if steps > _BACKTRACK_STEPS:
                return None
        return self._backtracking.fullmatch(line)


def _regexes(
    segments: List[Segment], escape: str
) -> Tuple["re.Pattern[bytes]", "Optional[re.Pattern[bytes]]", List[bytes], Dict[str, str]]:
    """(first-fit pattern, backtracking pattern or None, ambiguous follow literals, group of each variable)."""
    first_fit: List[bytes] = []
    backtracking: List[bytes] = []
    ambiguous: List[bytes] = []  # b"" marks a variable followed directly by another
    groups: Dict[str, str] = {}
    for k, seg in enumerate(segments):
        if isinstance(seg, bytes):
            first_fit.append(re.escape(seg))
            backtracking.append(re.escape(seg))
            continue
        group = f"v{k}"
        groups.setdefault(seg, group)
        syntax = value_syntax(seg, escape)
        nxt = segments[k + 1] if k + 1 < len(segments) else None
        name = group.encode()
        lazy = b"(?P<" + name + b">" + syntax.atom + b"*?)"
        greedy = b"(?P<" + name + b">" + syntax.atom + b"*)"
        if syntax.structure is not None and isinstance(nxt, bytes) and nxt[0] not in ENTRY_BYTES[seg]:
            # The text after the value cannot start inside an entry, so only a
            # separator can continue the value: entries and separators, matched
            # greedily, give the one right split ("502, 200 0.012").
            structured = b"(?P<" + name + b">" + syntax.structure + b")"
            first_fit.append(structured)
            backtracking.append(structured)
        elif nxt is None:
            # the value runs to the end of the line, short of a line ending
            ends_clean = {ord("\r"), ord("\n")} <= syntax.stops
            first_fit.append(greedy if ends_clean else lazy)
            backtracking.append(greedy if ends_clean else lazy)
        elif (isinstance(nxt, bytes) and k + 2 == len(segments)) or (
            isinstance(nxt, bytes) and nxt[0] in syntax.stops
        ):
            # Either the text after the value ends the line, so giving back
            # bytes from the end finds it in one linear pass, or the value
            # cannot hold that text's first byte and the match is unique.
            first_fit.append(greedy)
            backtracking.append(greedy)
        elif isinstance(nxt, bytes) and right_anchored(segments, k, escape):
            # The text after the value can be found only from the right (see
            # anchors.py): greedy gives back bytes from the end of the line
            # until the rest fits, so the last occurrence of the anchor wins.
            first_fit.append(greedy)
            backtracking.append(greedy)
        elif syntax.structure is not None and isinstance(nxt, bytes):
            # The text after the value may start inside an entry (": " after an
            # address): the shortest run of whole entries and separators that the
            # text follows, since text written after the value may hold it too.
            assert syntax.shortest is not None
            shortest = b"(?P<" + name + b">" + syntax.shortest + b")"
            first_fit.append(b"(?=" + shortest + re.escape(nxt) + b")(?P=" + name + b")")
            backtracking.append(shortest)
            ambiguous.append(nxt)
        elif isinstance(nxt, bytes):
            first_fit.append(b"(?=" + lazy + re.escape(nxt) + b")(?P=" + name + b")")
            backtracking.append(lazy)
            ambiguous.append(nxt)
        else:
            first_fit.append(b"(?=" + greedy + b")(?P=" + name + b")")
            backtracking.append(lazy)
            ambiguous.append(b"")
    tail = _NEWLINE_TAIL
    compiled_first = re.compile(b"".join(first_fit) + tail, re.DOTALL)
    compiled_back = re.compile(b"".join(backtracking) + tail, re.DOTALL) if ambiguous else None
    return compiled_first, compiled_back, ambiguous, groups
