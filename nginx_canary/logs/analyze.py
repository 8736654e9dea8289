"""Turn access-log lines into per-server, per-upstream and per-group figures.

The hot path counts identical raw field tuples first (see
:mod:`nginx_canary.logs.counting`: the C accelerator for "split" formats, else
``CompiledFormat.extract`` plus a ``Counter``), then decodes and attributes
each distinct tuple once, adding it with its count. Both counters give the
same tuples in the same order, so the figures are identical either way.

With one upstream in focus (``only_upstream``, as the daemon and ``analyze
--upstream`` have it) and ``$proxy_host`` in the format, a request that reached
one of that upstream's servers through another upstream (a tester's
``canary: true`` header, a cookie: anything that bypasses the weights) counts
under ``forced:ADDR`` only: apart, and never in the upstream's or a group's
figures, which the rollout judges.

Stamps: the sliding window and the cumulative stats take the time a line
was read (``at``). With ``stamp_requests`` and ``$msec`` in the format, each
request's own end time (:func:`request_end`) decides whether it is evidence
(see :meth:`WindowedStats.add`), so the evidence of a step leaves out the
requests that ended before it, however late they are read. The window keeps
the read time: the report's series reads each whole second once, just after
it ends, and a line read late must land in a second still to be read.
Stamps would make nearly every line a tuple of its own, so a live batch is
first counted by its stamps alone: only a batch on both sides of the
evidence mark (just after a step change) is counted with them (there, and
only there, a ``$msec`` no nginx writes makes its line unparsed).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from nginx_canary.logs.attribution import Attributor, Keys
from nginx_canary.logs.counting import Buffer, FieldCounter, Row, field_counter
from nginx_canary.logs.forgery import check_format
from nginx_canary.logs.format import CompiledFormat, upstream_fields
from nginx_canary.logs.window import Stats, WindowedStats
from nginx_canary.nginx.addresses import Resolver, logged_forms, system_resolver
from nginx_canary.nginx.model import NginxConfig

SERVER, UPSTREAM, GROUP, FORCED = "server:", "upstream:", "group:", "forced:"
_NO_VIA = ("-", "")
_MEMO_LIMIT = 100_000
_PENDING_LIMIT = 200_000


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
    ``warnings`` holds one line per variable of the format that may let a
    client forge what the analysis reads (see :mod:`nginx_canary.logs.forgery`).
    """

    def __init__(self, compiled: CompiledFormat, book: AddressBook, windows: WindowedStats, *,
                 only_upstream: Optional[str] = None, accelerated: Optional[bool] = None,
                 refuse_forgeable: bool = True, stamp_requests: bool = False) -> None:
        """``accelerated``: see :func:`nginx_canary.logs.counting.field_counter`.
        ``stamp_requests``: stamp each request with its ``$msec`` for the
        evidence when the format has it (see :func:`request_end`); lines with
        distinct stamps no longer count as one tuple, so live reading only.
        ``refuse_forgeable=False`` reads a format a client could forge (to test
        the parser on any format; never for a user's log).

        Raises:
            LogFormatError: the format lacks what per-upstream analysis needs, or
                a client can forge its fields.
            RuntimeError: ``accelerated=True`` and the C accelerator cannot serve.
        """
        self.compiled = compiled
        self.book = book
        self.windows = windows
        self.only_upstream = only_upstream
        self.fields = upstream_fields(compiled)
        self.warnings: List[str] = check_format(compiled, self.fields) if refuse_forgeable else []
        self._single_status = self.fields.status != "upstream_status"
        self._single_seconds = self.fields.latency != "upstream_response_time"
        self._names: Tuple[str, ...] = (self.fields.addr, self.fields.status, self.fields.latency)
        if only_upstream is not None and self.fields.via is not None:
            self._names += (self.fields.via,)
        self._attribute = Attributor(compiled.decode, self._targets, single_status=self._single_status,
                                     single_seconds=self._single_seconds, memo_limit=_MEMO_LIMIT)
        self._pending = field_counter(compiled, self._names, accelerated=accelerated)
        self.stamped = stamp_requests and self.fields.time == "msec"
        if self.stamped:
            # The stamps alone (cheap: a few per millisecond), and for a batch on both sides of the evidence
            # mark the tuples with their stamp last (cut off before attribution, which reads a 4th value as
            # $proxy_host).
            self._stamps = field_counter(compiled, ("msec",), accelerated=accelerated)
            self._stamped_pending = field_counter(compiled, self._names + ("msec",), accelerated=accelerated)
        self.lines = 0
        self.unparsed = 0

    def count_unparsed(self, n: int) -> None:
        """Lines dropped before parsing (over-long) still count as lines, unparsed."""
        self.lines += n
        self.unparsed += n

    def _targets(self, address: str, via: Optional[str]) -> Keys:
        upstream = self.book.upstream_of.get(address)
        if self.only_upstream is not None:
            if upstream != self.only_upstream:
                return ()
            if via is not None and via not in _NO_VIA and via != self.only_upstream:
                return (FORCED + address,)
        keys = [SERVER + address]
        if upstream is not None:
            keys.append(UPSTREAM + upstream)
        group = self.book.group_of.get(address)
        if group is not None:
            keys.append(GROUP + group)
        return tuple(keys)

    def feed(self, lines: Sequence[bytes], at: Optional[float] = None) -> None:
        """Count ``lines`` (with or without their newline) as seen at time ``at``.

        With ``at`` (live following) the lines go into the sliding window at
        once; without it (whole files) they are only counted, and attributed
        in bulk by :meth:`flush`, which is much faster for long files.
        """
        self._count(lambda counter: (len(lines), counter.feed_lines(lines)), at)

    def feed_block(self, block: Buffer, at: Optional[float] = None) -> None:
        """Like :meth:`feed` for a block of whole lines, each ending with ``\\n``.

        Bytes after the last ``\\n`` are ignored. Raises TypeError unless ``block`` is bytes, bytearray or a memoryview.
        """
        self._count(lambda counter: counter.feed_block(block), at)

    def _count(self, count: Callable[[FieldCounter], Tuple[int, int]], at: Optional[float]) -> None:
        """Count a batch with ``count(counter) -> (lines, misfits)``; attribute it at once when ``at`` is given."""
        mark = self.windows.evidence_mark
        if at is None or mark is None or not self.stamped:
            self._add_counts(count(self._pending))
            self._maybe_flush(at)
            return
        self.flush(at)
        count(self._stamps)
        stamps = [request_end(raw[0], at) for raw, _ in self._stamps.items()]
        self._stamps.clear()
        if not stamps or min(stamps) >= mark:
            self._add_counts(count(self._pending))
            self.flush(at)  # every stamp >= mark, so at >= mark: evidence by ``at``
        elif max(stamps) < mark:
            self._add_counts(count(self._pending))
            before = max(stamps)
            self._attribute_rows([(raw, n, before) for raw, n in self._pending.items()], at)
            self._pending.clear()
        else:
            self._add_counts(count(self._stamped_pending))
            self._attribute_rows(self._stamped_items(at, mark), at)
            self._stamped_pending.clear()

    def _add_counts(self, counted: Tuple[int, int]) -> None:
        self.lines += counted[0]
        self.unparsed += counted[1]

    def _maybe_flush(self, at: Optional[float]) -> None:
        # The pending counter is bounded: junk with ever-new values cannot grow it without limit.
        if at is not None or len(self._pending) >= _PENDING_LIMIT:
            self.flush(at)

    def flush(self, at: Optional[float] = None) -> None:
        """Attribute the counted lines to servers, upstreams and groups in the windows."""
        self._attribute_rows([(raw, n, None) for raw, n in self._pending.items()], at)
        self._pending.clear()

    def _attribute_rows(self, rows: Iterable[Tuple[Row, int, Optional[float]]], at: Optional[float]) -> None:
        """Add each ``(raw, count, evidence stamp or None)`` to the windows, stamped ``at``."""
        attribute = self._attribute
        add = self.windows.add
        for raw, count, ended in rows:
            attributed = attribute(raw)
            if attributed is None:
                self.unparsed += count
                continue
            for keys, status, seconds in attributed:
                for key in keys:
                    if ended is None:
                        add(key, status, seconds, count, at)
                    else:
                        add(key, status, seconds, count, at, ended)

    def _stamped_items(self, at: float, mark: float) -> List[Tuple[Row, int, Optional[float]]]:
        """The tuples of a batch on both sides of the evidence mark, without their stamp, one per side.

        Stamps make nearly every line a tuple of its own, and attributing
        each costs twenty times a stamp-less tuple; only the side of the mark
        matters to the windows, so each side's tuples are added once, with the
        stamp of the first of them.
        """
        counts: Dict[Tuple[Row, bool], int] = {}
        stamps: Dict[Tuple[Row, bool], float] = {}
        for raw, count in self._stamped_pending.items():
            ended = request_end(raw[-1], at)
            side = (raw[:-1], ended >= mark)
            if side in counts:
                counts[side] += count
            else:
                counts[side] = count
                stamps[side] = ended
        return [(side[0], count, stamps[side]) for side, count in counts.items()]

    def stats(self, key: str, window: Optional[float] = None, now: Optional[float] = None) -> Stats:
        """Cumulative figures for ``key`` since the mark, or those of the last ``window`` seconds."""
        if window is None:
            return self.windows.cumulative(key)
        return self.windows.window(key, window, now)

    def report(self, window: Optional[float] = None, now: Optional[float] = None) -> Dict[str, object]:
        """The documented JSON shape: lines, unparsed, servers, upstreams (and groups when defined, forced when any)."""
        self.flush()
        servers: Dict[str, object] = {}
        upstreams: Dict[str, object] = {}
        groups: Dict[str, object] = {}
        forced: Dict[str, object] = {}
        for key in sorted(self.windows.keys()):
            summary = self.stats(key, window, now).summary()
            if key.startswith(SERVER):
                address = key[len(SERVER):]
                servers[address] = {"upstream": self.book.upstream_of.get(address), **summary}
            elif key.startswith(UPSTREAM):
                upstreams[key[len(UPSTREAM):]] = summary
            elif key.startswith(GROUP):
                groups[key[len(GROUP):]] = summary
            elif key.startswith(FORCED):
                forced[key[len(FORCED):]] = summary
        out: Dict[str, object] = {"lines": self.lines, "unparsed": self.unparsed, "servers": servers, "upstreams": upstreams}
        if self.book.group_of:
            out["groups"] = groups
        if forced:
            out["forced"] = forced
        return out


def request_end(msec: bytes, read_at: float) -> float:
    """A request's evidence stamp from its raw ``$msec``, read at ``read_at``.

    Ahead of ``read_at`` (nginx's clock or the ms rounding ahead of the
    reader's, or a value no clock shows, or NaN): clamped to ``read_at``, as a
    line cannot be read before it is written. Older, however old: kept, since
    such a request did end before a step that began after it (the evidence
    rightly leaves it out; the window and the cumulative stats go by
    ``read_at`` anyway). No number (``-``): ``read_at``.
    """
    try:
        ended = float(msec)
    except ValueError:
        return read_at
    if not ended <= read_at:
        return read_at
    return ended


def feed_blocks(analyzer: Analyzer, blocks: Iterable[Tuple[Buffer, int]]) -> None:
    """Feed ``(block, overlong)`` pairs as :func:`nginx_canary.logs.reader.block_views` yields them."""
    for block, overlong in blocks:
        if overlong:
            analyzer.count_unparsed(overlong)
        if block:
            analyzer.feed_block(block)
    analyzer.flush()


def unmarked_forcing(config: NginxConfig, upstream: str, canary: Sequence[str], analyzer: Analyzer) -> List[str]:
    """One warning per other upstream that can reach a canary server while the format cannot tell (no ``$proxy_host``).

    Such an upstream is how a header or cookie override forces the canary
    (the shipped site example's ``backend_canary``); without ``$proxy_host``
    in the log, its requests are counted as canary traffic and judged.
    """
    if analyzer.fields.via is not None:
        return []
    found = []
    for block in config.upstreams:
        shared = sorted({s.address for s in block.servers if s.address in canary})
        if block.name != upstream and shared:
            found.append(f"upstream {block.name} also reaches canary {', '.join(shared)}, and the log format has no "
                         f"$proxy_host: requests forced through it count as canary traffic (log $proxy_host, "
                         f"as the shipped canary format does)")
    return found
