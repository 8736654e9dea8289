"""The "walk": a format read in C from literal to literal, with the regex strategy's answers.

A compiled ``log_format`` is literal, variable, literal, ... For each
variable, :mod:`nginx_canary.logs.regex_strategy` picks how its regex reads
the value (greedy up to a byte the value cannot hold, shortest up to the next
literal, whole ``$upstream_*`` entries, bounded from the right as
:mod:`nginx_canary.logs.anchors` decides...). :func:`walk_program` makes the
same choice, in the same order, and writes it as a step the C accelerator
(``WalkCounter`` in ``_fieldcount.c``) runs: jump to where the value ends,
check the literal after it, go on. Where nginx's escaping guarantees the
value cannot hold the literal's first byte (``"`` after an escaped value,
``","`` under escape=json, a tab under escape=default) that is one scan to a
stop byte; where a client-controlled value could hold the literal (the
unquoted ``$request`` of ``upstreamlog``), the step finds the anchor from the
right, as the regex does.

The walk reads a line only along the first path the regex's first try would
take; a line it cannot read that way (a misfit, a hostile request line, a
line the regex would read only by backtracking) is handed to the regex, which
stays the reference: the walk never decides that a line does not fit.

For ``escape=json`` formats a JSON library was measured instead
(``orjson.loads`` per line plus the same counting, bench/bench_analyze.py
--formats): 0.28 to 0.44 M lines/s against the walk's 1.5 to 2 M, so JSON
formats take the walk too.

A format with two variables side by side (``$a$b``), or an ``$upstream_*``
list other than ``$upstream_addr`` directly followed by a literal that can
start inside one of its entries, gets no walk: the regex reads it alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from nginx_canary.logs.anchors import can_occur, right_anchored
from nginx_canary.logs.syntax import ENTRY_BYTES, Segment, value_syntax

# Step kinds and list entry kinds, as _fieldcount.c numbers them.
STOP, FINAL, END, END_LAZY, STRUCT, SHORTEST, LAZY, RIGHT = range(1, 9)
_ENTRY_KIND: Dict[str, int] = {
    "upstream_addr": 1,
    "upstream_status": 2,
    "upstream_response_time": 3,
    "upstream_connect_time": 3,
    "upstream_header_time": 3,
    "upstream_bytes_received": 4,
    "upstream_bytes_sent": 4,
    "upstream_response_length": 4,
}

# (kind, json atoms, entry kind, may be empty, anchor step, literal after, atom table)
Step = Tuple[int, int, int, int, int, bytes, bytes]


@dataclass(frozen=True)
class WalkLayout:
    """What ``WalkCounter`` needs: the line's leading literal, the steps, and the step of each wanted variable."""

    prefix: bytes
    steps: Tuple[Step, ...]
    wanted: Tuple[int, ...]


class WalkProgram:
    """The steps of one format; :meth:`layout` picks the values wanted."""

    def __init__(self, prefix: bytes, steps: List[Step], names: List[str]) -> None:
        self.prefix = prefix
        self.steps = tuple(steps)
        self._step_of: Dict[str, int] = {}
        for i, name in enumerate(names):
            self._step_of.setdefault(name, i)

    def layout(self, names: Sequence[str]) -> WalkLayout:
        """The layout that hands back the values of ``names`` (variables of the format), in that order."""
        return WalkLayout(self.prefix, self.steps, tuple(self._step_of[n] for n in names))


def _atom_table(atom: bytes) -> Tuple[bytes, bool]:
    """(which bytes are one atom on their own, whether a backslash and any byte make one too)."""
    one = re.compile(atom, re.DOTALL)
    table = bytes(1 if one.fullmatch(bytes([b])) else 0 for b in range(256))
    return table, one.fullmatch(b"\\\n") is not None


def _anchor_literal(segments: Sequence[Segment], k: int, escape: str) -> int:
    """The index of the literal after ``segments[k]`` that cannot occur in the rest of the line (anchors.py's anchor)."""
    i = k + 1
    while can_occur(segments[i], segments[i + 1:], escape):  # type: ignore[arg-type]
        i += 2
    return i


def walk_program(segments: Sequence[Segment], escape: str) -> Optional[WalkProgram]:
    """The walk of a format (its segments and escape mode), or None when the regex must read it alone."""
    segments = list(segments)
    prefix = segments[0] if segments and isinstance(segments[0], bytes) else b""
    first = 1 if prefix else 0
    if first >= len(segments):
        return None
    steps: List[Step] = []
    names: List[str] = []
    for k in range(first, len(segments), 2):
        name, nxt = segments[k], segments[k + 1] if k + 1 < len(segments) else None
        if not isinstance(name, str) or isinstance(nxt, str):
            return None
        step = _step(segments, k, escape)
        if step is None:
            return None
        steps.append(step)
        names.append(name)
    return WalkProgram(prefix, steps, names)


def _step(segments: List[Segment], k: int, escape: str) -> Optional[Step]:
    """The step reading ``segments[k]`` as regex_strategy._regexes reads it (same cases, same order)."""
    name = segments[k]
    assert isinstance(name, str)
    nxt = segments[k + 1] if k + 1 < len(segments) else None
    syntax = value_syntax(name, escape)
    atoms, json = _atom_table(syntax.atom)
    literal = nxt if isinstance(nxt, bytes) else b""
    optional = int(escape == "json")

    def step(kind: int, entry: int = 0, anchor: int = -1) -> Step:
        return (kind, int(json), entry, optional, anchor, literal, atoms)

    if syntax.structure is not None and nxt is not None and literal[0] not in ENTRY_BYTES[name]:
        return step(STRUCT, _ENTRY_KIND[name])
    if nxt is None:
        if {ord("\r"), ord("\n")} <= syntax.stops:
            return step(END)
        return None if json else step(END_LAZY)
    if k + 2 == len(segments):
        return step(FINAL)
    if literal[0] in syntax.stops:
        return step(STOP)
    if right_anchored(segments, k, escape):
        # literals sit at odd distances from k: the one at k + 1 + 2j ends the value of step (own index + j)
        return step(RIGHT, anchor=_step_index(segments, k) + (_anchor_literal(segments, k, escape) - k - 1) // 2)
    if syntax.structure is not None:
        return step(SHORTEST, _ENTRY_KIND[name]) if name == "upstream_addr" else None
    return step(LAZY)


def _step_index(segments: Sequence[Segment], k: int) -> int:
    """The index of the step reading ``segments[k]`` (a leading literal is no step)."""
    return (k - 1) // 2 if isinstance(segments[0], bytes) else k // 2
