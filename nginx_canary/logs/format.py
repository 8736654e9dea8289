"""Compile an nginx ``log_format`` into the fastest parser that fits it.

How nginx writes each value under the format's ``escape=`` mode, and so which
bytes can never appear raw inside it, is in :mod:`nginx_canary.logs.syntax`.
When the format is a run of variables joined by one separator byte that no
value can contain (the shipped ``canary`` format: tabs under escape=default),
a line is parsed by splitting it: the "split" strategy
(:mod:`nginx_canary.logs.split_strategy`). Anything else gets a full-line
``re`` pattern that never backtracks more than linearly: the "regex" strategy
(:mod:`nginx_canary.logs.regex_strategy`), which the C accelerator also
reads literal to literal when it can, with the same answers (the "walk":
:mod:`nginx_canary.logs.walk_strategy`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from nginx_canary.errors import LogFormatError
from nginx_canary.logs.regex_strategy import RegexStrategy
from nginx_canary.logs.split_strategy import SplitLayout, SplitStrategy, split_strategy
from nginx_canary.logs.syntax import DECODERS, ESCAPE_MODES, Segment, pattern_segments
from nginx_canary.logs.walk_strategy import WalkLayout, WalkProgram, walk_program

COMBINED = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"'

CANARY_FORMAT = "\t".join(
    [
        "$msec",
        "$upstream_addr",
        "$status",
        "$upstream_status",
        "$request_time",
        "$upstream_response_time",
        "$remote_addr",
        "$request_method",
        "$host",
        "$uri",
        "$upstream_connect_time",
        "$request_id",
        "$proxy_host",
    ]
)

# Where the ready-made format lives, for error messages.
CANARY_SNIPPET = "conf.d/nginx-canary-log-format.conf"

# A variable ending one of log_format's strings, and the first byte of a name.
_TRAILING_BARE_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)\Z")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")


@dataclass(frozen=True)
class FormatSpec:
    """A ``log_format``: its name, its pattern (quoted strings joined, unquoted) and escape mode."""

    name: str
    pattern: str
    escape: str = "default"


@dataclass(frozen=True)
class UpstreamFields:
    """Which variables of a format feed the per-upstream analysis."""

    addr: str
    status: str
    latency: str
    time: Optional[str]
    final_status: Optional[str]
    request_time: Optional[str]
    via: Optional[str] = None

    def read(self) -> Tuple[str, ...]:
        """Every variable the analysis reads, each once."""
        return _unique([n for n in (self.addr, self.status, self.latency, self.time, self.final_status,
                                    self.request_time, self.via) if n is not None])


def parse_log_format_args(args: Sequence[str]) -> FormatSpec:
    """Turn a ``log_format`` directive's arguments (as crossplane gives them) into a spec.

    ``["main", "escape=json", "part1", "part2"]`` gives name ``main``, escape
    ``json`` and pattern ``part1part2``. nginx compiles each string on its own,
    so a variable ending one string (``'$status' 'x'``) is written as
    ``${status}`` when joining, lest it run into the next string's text.

    Raises:
        LogFormatError: no name, or an escape value nginx does not accept.
    """
    if not args or not args[0]:
        raise LogFormatError("log_format has no name")
    name, parts = args[0], list(args[1:])
    escape = "default"
    if parts and parts[0].startswith("escape="):
        escape = parts.pop(0)[len("escape=") :]
        if escape not in ESCAPE_MODES:
            raise LogFormatError(
                f"log_format {name!r}: escape={escape} is not one of {', '.join(ESCAPE_MODES)}"
            )
    joined = []
    for i, part in enumerate(parts):
        bare = _TRAILING_BARE_VARIABLE.search(part)
        if bare and i + 1 < len(parts) and _NAME_CHAR.match(parts[i + 1]):
            part = f"{part[: bare.start()]}${{{bare.group(1)}}}"
        joined.append(part)
    return FormatSpec(name, "".join(joined), escape)


def _unique(names: Sequence[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(names))


class CompiledFormat:
    """A parser for the lines one ``log_format`` produces.

    ``variables`` lists each variable once, in order of first appearance (when
    a variable appears twice, its first occurrence is the one read).
    ``strategy`` is ``"split"`` or ``"regex"`` (see the module docstring).
    """

    def __init__(self, spec: FormatSpec, segments: List[Segment]) -> None:
        self.spec = spec
        self.segments: Tuple[Segment, ...] = tuple(segments)
        self.variables: Tuple[str, ...] = _unique([s for s in segments if isinstance(s, str)])
        self._decode = DECODERS[spec.escape]
        split = split_strategy(segments, spec.escape)
        self._strategy: Union[SplitStrategy, RegexStrategy] = (
            split if split is not None else RegexStrategy(segments, spec.escape)
        )
        self.strategy = "split" if split is not None else "regex"
        # A "regex" format the C accelerator can also read, literal to literal (walk_strategy.py).
        self._walk: Optional[WalkProgram] = walk_program(segments, spec.escape) if split is None else None

    def __repr__(self) -> str:
        return f"CompiledFormat({self.spec!r}, strategy={self.strategy!r})"

    def decode(self, raw: bytes) -> str:
        """The value ``raw`` as nginx had it before escaping, decoded as UTF-8 (errors replaced)."""
        return self._decode(raw)

    def parse(self, line: bytes) -> Optional[Dict[str, str]]:
        """Every variable's decoded value in ``line``, or None if the line does not fit the format."""
        rows, _ = self.extract([line], self.variables)
        if not rows:
            return None
        decode = self._decode
        return {name: decode(raw) for name, raw in zip(self.variables, rows[0])}

    def _check_names(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.variables]
        if missing:
            raise LogFormatError(
                f"log format {self.spec.name!r} has no " + ", ".join(f"${n}" for n in missing)
            )

    def split_layout(self, names: Sequence[str]) -> Optional[SplitLayout]:
        """The layout that locates ``names`` in a line; None unless the strategy is "split".

        Raises:
            LogFormatError: a name is not a variable of this format.
        """
        self._check_names(names)
        if not isinstance(self._strategy, SplitStrategy):
            return None
        return self._strategy.layout(names)

    def walk_layout(self, names: Sequence[str]) -> Optional[WalkLayout]:
        """The walk that reads ``names`` in C; None for a "split" format or one the regex must read alone.

        Raises:
            LogFormatError: a name is not a variable of this format.
        """
        self._check_names(names)
        return self._walk.layout(names) if self._walk is not None else None

    def extract(self, lines: Sequence[bytes], names: Sequence[str]) -> Tuple[List[Tuple[bytes, ...]], int]:
        """The raw (still escaped) values of ``names`` for each line that fits, and how many did not.

        Lines may end with ``\\n`` or ``\\r\\n``. Rows come in line order.

        Raises:
            LogFormatError: a name is not a variable of this format.
        """
        self._check_names(names)
        if not isinstance(lines, list):
            lines = list(lines)
        return self._strategy.extract(lines, names)


def compile_format(spec: FormatSpec) -> CompiledFormat:
    """Build the parser for ``spec``.

    Raises:
        LogFormatError: the escape mode is not default, json or none.
    """
    if spec.escape not in ESCAPE_MODES:
        raise LogFormatError(f"log_format {spec.name!r}: escape={spec.escape} is not one of {', '.join(ESCAPE_MODES)}")
    return CompiledFormat(spec, pattern_segments(spec.pattern))

def upstream_fields(compiled: CompiledFormat) -> UpstreamFields:
    """Pick the variables the per-upstream analysis reads from ``compiled``.

    Raises:
        LogFormatError: the format lacks ``$upstream_addr``, any status or any
            latency; the one-line message names every missing piece.
    """
    present = set(compiled.variables)

    def first(*names: str) -> Optional[str]:
        return next((n for n in names if n in present), None)

    addr = first("upstream_addr")
    status = first("upstream_status", "status")
    latency = first("upstream_response_time", "request_time")
    missing = []
    if addr is None:
        missing.append("$upstream_addr")
    if status is None:
        missing.append("a status ($upstream_status or $status)")
    if latency is None:
        missing.append("a latency ($upstream_response_time or $request_time)")
    if missing:
        listed = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
        raise LogFormatError(
            f"log format {compiled.spec.name!r} lacks {listed}; "
            f"use the 'canary' log_format from {CANARY_SNIPPET}"
        )
    assert addr is not None and status is not None and latency is not None
    return UpstreamFields(
        addr=addr,
        status=status,
        latency=latency,
        time=first("msec", "time_iso8601", "time_local"),
        final_status=first("status"),
        request_time=first("request_time"),
        via=first("proxy_host"),
    )

