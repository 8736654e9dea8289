"""From one raw ``($upstream_addr, status, latency)`` tuple to what it counts for: keys, status, seconds.

The analyzer attributes each distinct raw tuple once, and a file has
thousands of them (mostly distinct latencies) but a handful of distinct
addresses and statuses. :func:`nginx_canary.logs.attempts.split_attempts`
pairs the three fields entry by entry, so each field can be read on its own,
once per distinct value: the address field gives the number of entries, which
of them are attempts and their keys (and, with ``$status``, the 502 of each
retried try); the status and latency fields give their entries. Putting them
together is a short loop. :meth:`Attributor.full` is the reference: it runs
``split_attempts`` on the whole tuple, and the tests hold the two equal.

A tuple may carry a fourth value, ``$proxy_host``: the upstream the request's
last ``proxy_pass`` named. It says how the request reached its server (through
the weights of the steered upstream, or forced through another), so the
attempts of the last redirect group get it with their keys; earlier groups
came from other locations, whose ``proxy_pass`` the log does not show.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple, TypeVar, Union

from nginx_canary.logs.attempts import (
    RETRIED_STATUS,
    REDIRECT,
    RETRY,
    entries,
    group_ends,
    parse_seconds,
    parse_status,
    split_attempts,
)

# What $upstream_addr can hold for one attempt: IPv4:port, [IPv6]:port, a unix
# socket, or an upstream's name when none of its servers was available.
ADDRESS = re.compile(r"\A(?:\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}|unix:[^\s,]+|[A-Za-z0-9_.\-]+)\Z")

Keys = Tuple[str, ...]
# Per attempt: the keys it counts for, its status, its seconds. None: the
# tuple holds an address no nginx writes, and the line counts as unparsed.
Attributed = Optional[List[Tuple[Keys, Optional[int], Optional[float]]]]

_NO_VALUE = ("-", "")

# What an address field says: (entries, attempts as (entry index, keys), each
# entry's status when only $status is logged and a later try followed it).
_Where = Tuple[int, Tuple[Tuple[int, Keys], ...], Tuple[Optional[int], ...]]
# A status or latency field: its entries parsed, or (for $status /
# $request_time) the whole value parsed.
_Codes = Union[Tuple[Optional[int], ...], Optional[int]]
_Times = Union[Tuple[Optional[float], ...], Optional[float]]

K = TypeVar("K")
V = TypeVar("V")


class Attributor:
    """``attributor(raw)``: the attribution of one raw tuple, from values memoized per field.

    ``decode`` turns a raw value into text (the format's escape mode);
    ``targets(address, via)`` gives the keys of an address reached through
    ``via`` (the decoded ``$proxy_host``, or None). Each memo holds at most
    ``memo_limit`` values. Pure and total: never raises.
    """

    def __init__(self, decode: Callable[[bytes], str], targets: Callable[[str, Optional[str]], Keys], *,
                 single_status: bool, single_seconds: bool, memo_limit: int = 100_000) -> None:
        self._decode = decode
        self._targets = targets
        self._single_status = single_status
        self._single_seconds = single_seconds
        self._limit = memo_limit
        self._wheres: Dict[Tuple[bytes, Optional[bytes]], Optional[_Where]] = {}
        self._codes: Dict[bytes, _Codes] = {}
        self._times: Dict[bytes, _Times] = {}

    def __call__(self, raw: Tuple[bytes, ...]) -> Attributed:
        addr, status, seconds = raw[:3]
        place = (addr, raw[3] if len(raw) > 3 else None)
        try:
            where = self._wheres[place]
        except KeyError:
            where = self._remember(self._wheres, place, self._where(*place))
        if where is None:
            return None
        count, attempts, retried = where
        if not attempts:
            return []
        try:
            codes = self._codes[status]
        except KeyError:
            codes = self._remember(self._codes, status, self._parse_codes(status))
        try:
            times = self._times[seconds]
        except KeyError:
            times = self._remember(self._times, seconds, self._parse_times(seconds))
        last = count - 1
        out = []
        for i, keys in attempts:
            if isinstance(codes, tuple):
                code = codes[i] if i < len(codes) else None
            else:
                code = codes if i == last else retried[i]
            if isinstance(times, tuple):
                spent = times[i] if i < len(times) else None
            else:
                spent = times if i == last else None
            out.append((keys, code, spent))
        return out

    def full(self, raw: Tuple[bytes, ...]) -> Attributed:
        """The attribution of ``raw`` through :func:`split_attempts`, every attempt (the reference)."""
        addr, status, seconds = (self._decode(value) for value in raw[:3])
        via = self._decode(raw[3]) if len(raw) > 3 else None
        attempts = split_attempts(addr, status, seconds,
                                  single_status=self._single_status, single_seconds=self._single_seconds)
        if any(not ADDRESS.match(a.address) for a in attempts):
            return None
        found = entries(addr)
        last_group = _last_group_start(addr, len(found))
        positions = [i for i, address in enumerate(found) if address not in _NO_VALUE]
        return [(self._targets(a.address, via if i >= last_group else None), a.status, a.seconds)
                for i, a in zip(positions, attempts)]

    def _where(self, raw: bytes, raw_via: Optional[bytes]) -> Optional[_Where]:
        """None when an attempt's address is none nginx writes."""
        addr = self._decode(raw)
        via = self._decode(raw_via) if raw_via is not None else None
        found = entries(addr)
        last_group = _last_group_start(addr, len(found))
        attempts = []
        for i, address in enumerate(found):
            if address in _NO_VALUE:
                continue
            if not ADDRESS.match(address):
                return None
            attempts.append((i, self._targets(address, via if i >= last_group else None)))
        retried: Tuple[Optional[int], ...] = ()
        if self._single_status and attempts:
            retried = tuple(None if end else RETRIED_STATUS for end in group_ends(addr))
        return len(found), tuple(attempts), retried

    def _parse_codes(self, raw: bytes) -> _Codes:
        value = self._decode(raw)
        if self._single_status:
            return parse_status(value.strip() if value else None)
        return tuple(parse_status(e) for e in entries(value))

    def _parse_times(self, raw: bytes) -> _Times:
        value = self._decode(raw)
        if self._single_seconds:
            return parse_seconds(value.strip() if value else None)
        return tuple(parse_seconds(e) for e in entries(value))

    def _remember(self, memo: Dict[K, V], key: K, value: V) -> V:
        if len(memo) >= self._limit:
            memo.clear()
        memo[key] = value
        return value


def _last_group_start(addr: str, count: int) -> int:
    """The index of the first entry of ``addr``'s last redirect group (``count`` entries in all)."""
    if not count:
        return 0
    return count - len(addr.rsplit(REDIRECT, 1)[-1].split(RETRY))
