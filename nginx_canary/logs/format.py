"""Compile an nginx ``log_format`` into the fastest parser that fits it.

nginx writes each variable's value through an escaping function chosen by the
format's ``escape=`` parameter, and that choice decides which bytes can never
appear raw inside a value:

- ``default``: bytes below 0x20, ``"``, ``\\`` and bytes from 0x7f up become
  ``\\xHH``; so a tab or a ``"`` is never part of a value (``\\`` is, as the
  start of an escape).
- ``json``: ``"`` and ``\\`` become ``\\"`` and ``\\\\``, control bytes become
  ``\\n``, ``\\t``, ``\\u00XX``...; a raw control byte is never part of a value,
  and a ``"`` only ever follows a backslash. A variable that is not found is
  written as an empty string rather than ``-``.
- ``none``: values are written as they are; nothing is guaranteed.

A few variables are written by the log module itself or have a fixed shape
(``$status``, ``$msec``, ``$upstream_status``...), so their values are narrower
still whatever the mode.

When the format is a run of variables joined by one separator byte that no
value can contain (the shipped ``canary`` format: tabs under escape=default),
a line is parsed with ``bytes.split`` driven by C-level ``map`` calls: the
"split" strategy. (The analyzer reads split formats through the C accelerator
of :mod:`nginx_canary.logs.counting` when it is built, which finds the same
fields from :meth:`CompiledFormat.split_layout`; ``extract`` here is the
pure-Python path and the reference it is tested against.) Anything else gets
a full-line ``re`` pattern: the "regex" strategy. That pattern never
backtracks more than linearly: a value whose following literal can occur
inside it is matched first-fit (an atomic group, written as a capturing
lookahead plus a back-reference because ``(?>...)`` needs Python 3.11), and
only a line that fails first-fit and is short enough for its number of
candidate split points gets a second, backtracking try.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import compress, repeat
from operator import itemgetter, methodcaller
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from nginx_canary.errors import LogFormatError

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

ESCAPE_MODES = ("default", "json", "none")

# nginx's variable syntax (ngx_http_log_compile_format): $name or ${name}.
# nginx rejects a "$" that starts no name; we read it as literal text.
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_TRAILING_BARE_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)\Z")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")

_ALL_BYTES = frozenset(range(256))
_CONTROL = frozenset(range(0x20))
_DIGITS = b"0123456789"

# Values nginx computes itself, with a fixed alphabet in every escape mode.
# "-" is in each: default mode logs it for a variable that is not found.
_KNOWN_ALPHABETS: Dict[str, bytes] = {
    "status": _DIGITS + b"-",
    "body_bytes_sent": _DIGITS + b"-",
    "bytes_sent": _DIGITS + b"-",
    "request_length": _DIGITS + b"-",
    "connection": _DIGITS + b"-",
    "connection_requests": _DIGITS + b"-",
    "pid": _DIGITS + b"-",
    "remote_port": _DIGITS + b"-",
    "server_port": _DIGITS + b"-",
    "msec": _DIGITS + b".-",
    "request_time": _DIGITS + b".-",
    "pipe": b"p.-",
    "request_id": b"0123456789abcdef-",
    "time_iso8601": _DIGITS + b"T:+-",
    "time_local": _DIGITS + b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/: +-",
    # addresses as nginx prints them (IPv4, IPv6, "unix:"), never client text
    "remote_addr": _DIGITS + b"ABCDEFabcdefnuix.:-",
    "server_addr": _DIGITS + b"ABCDEFabcdefnuix.:-",
    # one entry per attempt: ", " between attempts, " : " between redirects
    "upstream_status": _DIGITS + b", :-",
    "upstream_response_time": _DIGITS + b"., :-",
    "upstream_connect_time": _DIGITS + b"., :-",
    "upstream_header_time": _DIGITS + b"., :-",
    "upstream_bytes_received": _DIGITS + b", :-",
    "upstream_bytes_sent": _DIGITS + b", :-",
    "upstream_response_length": _DIGITS + b", :-",
}

# Bytes escape=default writes raw: printable ASCII except '"' ("\" starts \xHH).
_DEFAULT_RAW = frozenset(range(0x20, 0x7F)) - {ord('"')}
_JSON_ATOM = rb'(?:[^"\\\x00-\x1f]|\\.)'

# A line that fails the first-fit pattern gets the backtracking pattern only if
# its length times the product of (candidate split points + 1) over the
# ambiguous values, a bound on the steps that retry can take, is at most this:
# a long or separator-riddled junk line costs one linear pass and no more.
_BACKTRACK_STEPS = 50_000

_NEWLINE_TAIL = rb"(?:\r?\n)?"

Segment = Union[bytes, str]  # bytes: literal text; str: a variable name


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


@dataclass(frozen=True)
class _ValueSyntax:
    """How one variable's logged value looks under the format's escape mode.

    ``atom`` is a regex matching one unit of the value; ``never`` the bytes that
    are never written raw inside it; ``stops`` the bytes at which a greedy run
    of atoms is bound to end (``never``, plus ``"`` for JSON strings, whose
    inner quotes always come as ``\\"``).
    """

    atom: bytes
    never: FrozenSet[int]
    stops: FrozenSet[int]
    structure: Optional[bytes] = None


# The $upstream_* variables hold one entry per attempt, joined by ", " (next
# attempt) or " : " (internal redirect). A set of allowed bytes cannot tell
# "502, 200" followed by a space from "502," followed by one, so these are
# matched by their structure: whole entries and separators, nothing else.
_ATTEMPT_SEPARATOR = rb"(?:, | : )"
_ATTEMPT_ENTRIES: Dict[str, bytes] = {
    "upstream_addr": rb'[^\s,"]+',
    "upstream_status": rb"(?:[0-9]{3}|-)",
    "upstream_response_time": rb"(?:[0-9]+(?:\.[0-9]+)?|-)",
    "upstream_connect_time": rb"(?:[0-9]+(?:\.[0-9]+)?|-)",
    "upstream_header_time": rb"(?:[0-9]+(?:\.[0-9]+)?|-)",
    "upstream_bytes_received": rb"(?:[0-9]+|-)",
    "upstream_bytes_sent": rb"(?:[0-9]+|-)",
    "upstream_response_length": rb"(?:[0-9]+|-)",
}


_NUMBER_BYTES = frozenset(b"0123456789.-")
# Bytes that can stand inside one entry (not counting the separators).
_ENTRY_BYTES: Dict[str, FrozenSet[int]] = {
    name: _NUMBER_BYTES for name in _ATTEMPT_ENTRIES if name != "upstream_addr"
}
_ENTRY_BYTES["upstream_addr"] = frozenset(range(256)) - frozenset(b' \t\n\r\x0b\x0c,"')


def _attempt_structure(name: str, escape: str) -> Optional[bytes]:
    entry = _ATTEMPT_ENTRIES.get(name)
    if entry is None:
        return None
    body = entry + b"(?:" + _ATTEMPT_SEPARATOR + entry + b")*"
    # escape=json writes an unset variable as an empty string, not "-"
    return b"(?:" + body + b")?" if escape == "json" else body


def _char_class(allowed: FrozenSet[int]) -> bytes:
    """A regex character class for ``allowed``, written as ranges so patterns stay readable."""
    runs: List[List[int]] = []
    for c in sorted(allowed):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    body = b"".join(
        b"\\x%02x" % lo if lo == hi else b"\\x%02x-\\x%02x" % (lo, hi) for lo, hi in runs
    )
    return b"[" + body + b"]"


def _value_syntax(name: str, escape: str) -> _ValueSyntax:
    known = _KNOWN_ALPHABETS.get(name)
    structure = _attempt_structure(name, escape)
    if known is not None:
        allowed = frozenset(known)
    elif escape == "default":
        allowed = _DEFAULT_RAW
    elif escape == "json":
        return _ValueSyntax(_JSON_ATOM, _CONTROL, _CONTROL | {ord('"')}, structure)
    else:
        allowed = _ALL_BYTES - {ord("\n")}
    never = _ALL_BYTES - allowed
    return _ValueSyntax(_char_class(allowed), never, never, structure)


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


def _segments(pattern: str) -> List[Segment]:
    """The pattern as alternating literal bytes and variable names (adjacent literals merged)."""
    out: List[Segment] = []
    pos = 0
    for m in _VARIABLE.finditer(pattern):
        if m.start() > pos:
            out.append(pattern[pos : m.start()].encode())
        out.append(m.group(1) or m.group(2))
        pos = m.end()
    if pos < len(pattern):
        out.append(pattern[pos:].encode())
    return out


def _unique(names: Sequence[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(names))


_DEFAULT_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_JSON_ESCAPE = re.compile(r'\\(?:u([0-9A-Fa-f]{4})|(["\\/bfnrt]))')
_JSON_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _json_unescape(m: "re.Match[str]") -> str:
    if m.group(1) is not None:
        return chr(int(m.group(1), 16))
    return _JSON_SIMPLE[m.group(2)]


def _decode_default(raw: bytes) -> str:
    if b"\\" in raw:
        raw = _DEFAULT_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return raw.decode("utf-8", "replace")


def _decode_json(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if "\\" not in text:
        return text
    text = _JSON_ESCAPE.sub(_json_unescape, text)
    # \uD83D\uDE00-style pairs arrive as two lone surrogates: join them.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _decode_none(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


_DECODERS = {"default": _decode_default, "json": _decode_json, "none": _decode_none}


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
        self._decode = _DECODERS[spec.escape]
        split = _split_layout(segments, spec.escape)
        if split is not None:
            self.strategy = "split"
            self._sep, self._prefix, self._suffix, order = split
            self._fields = len(order)
            self._index: Dict[str, int] = {}
            for i, name in enumerate(order):
                self._index.setdefault(name, i)
        else:
            self.strategy = "regex"
            self._first_fit, self._backtracking, self._ambiguous, self._groups = _regexes(segments, spec.escape)

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
        if self.strategy != "split":
            return None
        return SplitLayout(self._sep, self._fields, tuple(self._index[n] for n in names), self._prefix, self._suffix)

    def extract(self, lines: Sequence[bytes], names: Sequence[str]) -> Tuple[List[Tuple[bytes, ...]], int]:
        """The raw (still escaped) values of ``names`` for each line that fits, and how many did not.

        Lines may end with ``\\n`` or ``\\r\\n``. Rows come in line order.

        Raises:
            LogFormatError: a name is not a variable of this format.
        """
        self._check_names(names)
        if not isinstance(lines, list):
            lines = list(lines)
        if self.strategy == "split":
            return self._extract_split(lines, names)
        return self._extract_regex(lines, names)

    def _extract_split(self, lines: List[bytes], names: Sequence[str]) -> Tuple[List[Tuple[bytes, ...]], int]:
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

    def _extract_regex(self, lines: List[bytes], names: Sequence[str]) -> Tuple[List[Tuple[bytes, ...]], int]:
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


def _strip_newlines(lines: List[bytes]) -> List[bytes]:
    lines = list(map(methodcaller("removesuffix", b"\n"), lines))
    return list(map(methodcaller("removesuffix", b"\r"), lines))


def _split_layout(segments: List[Segment], escape: str) -> Optional[Tuple[bytes, bytes, bytes, List[str]]]:
    """(separator, prefix, suffix, variables) when the format is ``[prefix] $a SEP $b ... [suffix]``."""
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
    if not all(sep[0] in _value_syntax(n, escape).never for n in names):  # type: ignore[arg-type]
        return None
    return sep, prefix, suffix, [n for n in names if isinstance(n, str)]


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
        syntax = _value_syntax(seg, escape)
        nxt = segments[k + 1] if k + 1 < len(segments) else None
        name = group.encode()
        lazy = b"(?P<" + name + b">" + syntax.atom + b"*?)"
        greedy = b"(?P<" + name + b">" + syntax.atom + b"*)"
        if syntax.structure is not None and isinstance(nxt, bytes) and nxt[0] not in _ENTRY_BYTES[seg]:
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


def compile_format(spec: FormatSpec) -> CompiledFormat:
    """Build the parser for ``spec``.

    Raises:
        LogFormatError: the escape mode is not default, json or none.
    """
    if spec.escape not in ESCAPE_MODES:
        raise LogFormatError(f"log_format {spec.name!r}: escape={spec.escape} is not one of {', '.join(ESCAPE_MODES)}")
    return CompiledFormat(spec, _segments(spec.pattern))


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

