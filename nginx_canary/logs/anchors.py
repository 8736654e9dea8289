"""Which values a parser may bound from the right: where the text after them is found only once.

A value that may hold anything nginx writes raw, such as an unquoted
``$request`` (for a request nginx refuses with 400, ``$request`` is every
byte the client sent up to CR or LF, spaces included: see
``ngx_http_variable_request_line``), cannot be bounded by the first
occurrence of the literal after it: the client may have written that literal.
It can be bounded by the *last* occurrence when the rest of the line cannot
hold that literal. In ``... $request $status upstream_response_time
$upstream_response_time msec $msec ...`` the literal
`` upstream_response_time `` can appear in the request but not in what
follows it (numbers and other literals), so its last occurrence is the real
one; and ``$status``, which holds no space, then starts after the last space
before it. :func:`right_anchored` finds such values; the regex strategy
matches them greedily (which gives back bytes from the end of the line, so
the last occurrence wins) and the forgery check knows they forge nothing
after them.
"""

from __future__ import annotations

from typing import FrozenSet, List, Sequence, Set

from nginx_canary.logs.syntax import Segment, value_syntax

_ALL = frozenset(range(256))


def written_bytes(name: str, escape: str) -> FrozenSet[int]:
    """Every byte the value of ``$name`` may show raw in a line written with ``escape``."""
    return _ALL - value_syntax(name, escape).never


def _automaton(literal: bytes) -> List[List[int]]:
    """``table[state][byte]``: how many bytes of ``literal`` are matched after reading ``byte`` (KMP)."""
    m = len(literal)
    table = [[0] * 256 for _ in range(m)]
    table[0][literal[0]] = 1
    fallback = 0
    for state in range(1, m):
        table[state] = list(table[fallback])
        table[state][literal[state]] = state + 1
        fallback = table[fallback][literal[state]]
    return table


def can_occur(literal: bytes, segments: Sequence[Segment], escape: str) -> bool:
    """Whether ``literal`` can appear in text written by ``segments`` (each variable at any value it may take)."""
    if not literal:
        return True
    table, m = _automaton(literal), len(literal)
    relevant = frozenset(literal)
    states: Set[int] = {0}
    for seg in segments:
        if isinstance(seg, bytes):
            for byte in seg:
                states = {table[s][byte] for s in states}
                if m in states:
                    return True
            continue
        allowed = written_bytes(seg, escape)
        steps = allowed & relevant
        resets = bool(allowed - relevant)  # a byte outside the literal takes any state back to 0
        frontier = set(states)
        while frontier:
            reached = {table[s][b] for s in frontier for b in steps}
            if resets:
                reached.add(0)
            if m in reached:
                return True
            frontier = reached - states
            states |= frontier
    return False


def right_anchored(segments: Sequence[Segment], k: int, escape: str) -> bool:
    """Whether the end of the value at ``segments[k]`` is fixed by the text after it, read from the right.

    True when a literal after it cannot occur in the rest of the line (an
    anchor: its last occurrence is the real one), and each variable between
    the value and that anchor cannot hold the last byte of the literal before
    it (so, from the anchor leftwards, each one starts after the last such byte).
    """
    i = k + 1
    while i < len(segments):
        literal = segments[i]
        if not isinstance(literal, bytes):
            return False
        if not can_occur(literal, segments[i + 1:], escape):
            return True
        if i + 1 >= len(segments):
            return False
        between = segments[i + 1]
        if not isinstance(between, str) or literal[-1] in written_bytes(between, escape):
            return False
        i += 2
    return False
