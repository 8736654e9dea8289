"""Turn access-log lines into per-server, per-upstream and per-group figures.

The hot path counts identical raw field tuples first (C-level work), then
decodes and attributes each distinct tuple once, adding it with its count.
"""

from __future__ import annotations

import re
import collections
from typing import Counter, Dict, Iterable, List, Optional, Sequence, Tuple

from nginx_canary.logs.attempts import split_attempts
from nginx_canary.logs.format import CompiledFormat, upstream_fields
from nginx_canary.logs.records import Attempt
from nginx_canary.logs.window import Stats, WindowedStats
from nginx_canary.nginx.addresses import Resolver, logged_forms, system_resolver
from nginx_canary.nginx.conf import NginxConfig

SERVER, UPSTREAM, GROUP = "server:", "upstream:", "group:"
_MEMO_LIMIT = 100_000
_PENDING_LIMIT = 200_000
# What $upstream_addr can hold for one attempt: IPv4:port, [IPv6]:port, a unix
# socket, or an upstream's name when none of its servers was available.
_ADDRESS = re.compile(r"\A(?:\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}|unix:[^\s,]+|[A-Za-z0-9_.\-]+)\Z")


class AddressBook:
    """Which upstream (and which group, stable or canary) a logged address belongs to."""

    def __init__(self, upstream_of: Dict[str, str], group_of: Optional[Dict[str, str]] = None) -> None:
        self.upstream_of = upstream_of
        self.group_of = group_of or {}

    @classmethod
    def from_config(cls, config: Optional[NginxConfig], *, resolver: Resolver = system_resolver,
                    upstream: Optional[str] = None, canary: Sequence[str] = ()) -> "AddressBook":
        """Map every server of every upstream (or only ``upstream``) to the addresses nginx logs for it.

        With ``canary`` (addresses as written in ``upstream``), also map each of
        that upstream's non-backup servers to group ``canary`` or ``stable``.
        """
        upstream_of: Dict[str, str] = {}
        group_of: Dict[str, str] = {}
        for block in (config.upstreams if config else ()):
            if upstream is not None and block.name != upstream:
                continue
            for server in block.servers:
                for logged in logged_forms(server.address, resolver):
                    upstream_of.setdefault(logged, block.name)
                    if canary and not server.backup:
                        group_of[logged] = "canary" if server.address in canary else "stable"
            upstream_of.setdefault(block.name, block.name)
        return cls(upstream_of, group_of)


class Analyzer:
    """Feeds log lines into :class:`WindowedStats` keyed ``server:ADDR``, ``upstream:NAME``, ``group:NAME``.

    ``lines`` counts every line seen, ``unparsed`` those that did not fit the
    format or held values no nginx writes (binary junk, over-long lines).
    Requests answered by nginx itself (no upstream attempt) count as lines only.
    """

    def __init__(self, compiled: CompiledFormat, book: AddressBook, windows: WindowedStats, *,
                 only_upstream: Optional[str] = None) -> None:
        self.compiled = compiled
        self.book = book
        self.windows = windows
        self.only_upstream = only_upstream
        self.fields = upstream_fields(compiled)
        self._single_status = self.fields.status != "upstream_status"
        self._single_seconds = self.fields.latency != "upstream_response_time"
        self._names = (self.fields.addr, self.fields.status, self.fields.latency)
        self._memo: Dict[Tuple[bytes, ...], Optional[List[Tuple[Tuple[str, ...], Optional[int], Optional[float]]]]] = {}
        self._pending: Counter[Tuple[bytes, ...]] = collections.Counter()
        self.lines = 0
        self.unparsed = 0

    def count_unparsed(self, n: int) -> None:
        """Lines dropped before parsing (over-long) still count as lines, unparsed."""
        self.lines += n
        self.unparsed += n

    def _targets(self, attempt: Attempt) -> Tuple[str, ...]:
        upstream = self.book.upstream_of.get(attempt.address)
        if self.only_upstream is not None and upstream != self.only_upstream:
            return ()
        keys = [SERVER + attempt.address]
        if upstream is not None:
            keys.append(UPSTREAM + upstream)
        group = self.book.group_of.get(attempt.address)
        if group is not None:
            keys.append(GROUP + group)
        return tuple(keys)

    def _attribute(self, raw: Tuple[bytes, ...]) -> Optional[List[Tuple[Tuple[str, ...], Optional[int], Optional[float]]]]:
        decode = self.compiled.decode
        addr, status, seconds = (decode(value) for value in raw)
        attempts = split_attempts(addr, status, seconds,
                                  single_status=self._single_status, single_seconds=self._single_seconds)
        if any(not _ADDRESS.match(a.address) for a in attempts):
            return None
        return [(self._targets(a), a.status, a.seconds) for a in attempts]

    def feed(self, lines: Sequence[bytes], at: Optional[float] = None) -> None:
        """Count ``lines`` (with or without their newline) as seen at time ``at``.

        With ``at`` (live following) the lines go into the sliding window at
        once; without it (whole files) they are only counted, and attributed
        in bulk by :meth:`flush`, which is much faster for long files.
        """
        rows, misfits = self.compiled.extract(lines, self._names)
        self.lines += len(lines)
        self.unparsed += misfits
        self._pending.update(rows)
        self._maybe_flush(at)

    def feed_block(self, block: bytes, at: Optional[float] = None) -> None:
        """Like :meth:`feed` for a block of whole lines, each ending with ``\\n``."""
        lines = block.split(b"\n")
        lines.pop()
        self.feed(lines, at)

    def _maybe_flush(self, at: Optional[float]) -> None:
        # The pending counter is bounded: junk with ever-new values cannot grow it without limit.
        if at is not None or len(self._pending) >= _PENDING_LIMIT:
            self.flush(at)

    def flush(self, at: Optional[float] = None) -> None:
        """Attribute the counted lines to servers, upstreams and groups in the windows."""
        memo = self._memo
        add = self.windows.add
        for raw, count in self._pending.items():
            try:
                attributed = memo[raw]
            except KeyError:
                if len(memo) >= _MEMO_LIMIT:
                    memo.clear()
                attributed = memo[raw] = self._attribute(raw)
            if attributed is None:
                self.unparsed += count
                continue
            for keys, status, seconds in attributed:
                for key in keys:
                    add(key, status, seconds, count, at)
        self._pending.clear()

    def stats(self, key: str, window: Optional[float] = None, now: Optional[float] = None) -> Stats:
        """Cumulative figures for ``key`` since the mark, or those of the last ``window`` seconds."""
        if window is None:
            return self.windows.cumulative(key)
        return self.windows.window(key, window, now)

    def report(self, window: Optional[float] = None, now: Optional[float] = None) -> Dict[str, object]:
        """The documented JSON shape: lines, unparsed, servers, upstreams (and groups when defined)."""
        self.flush()
        servers: Dict[str, object] = {}
        upstreams: Dict[str, object] = {}
        groups: Dict[str, object] = {}
        for key in sorted(self.windows.keys()):
            summary = self.stats(key, window, now).summary()
            if key.startswith(SERVER):
                address = key[len(SERVER):]
                servers[address] = {"upstream": self.book.upstream_of.get(address), **summary}
            elif key.startswith(UPSTREAM):
                upstreams[key[len(UPSTREAM):]] = summary
            elif key.startswith(GROUP):
                groups[key[len(GROUP):]] = summary
        out: Dict[str, object] = {"lines": self.lines, "unparsed": self.unparsed, "servers": servers, "upstreams": upstreams}
        if self.book.group_of:
            out["groups"] = groups
        return out


def feed_blocks(analyzer: Analyzer, blocks: Iterable[Tuple[bytes, int]]) -> None:
    """Feed ``(block, overlong)`` pairs as :func:`nginx_canary.logs.reader.block_batches` yields them."""
    for block, overlong in blocks:
        if overlong:
            analyzer.count_unparsed(overlong)
        if block:
            analyzer.feed_block(block)
    analyzer.flush()
