"""How nginx writes a log line: a pattern's literal and variable segments, and each value under ``escape=``.

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
still whatever the mode. :func:`value_syntax` says what one value may look
like (for the parsers of :mod:`nginx_canary.logs.format`); ``DECODERS`` undo
each mode's escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Optional, Union

ESCAPE_MODES = ("default", "json", "none")

# nginx's variable syntax (ngx_http_log_compile_format): $name or ${name}.
# nginx rejects a "$" that starts no name; we read it as literal text.
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")

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

Segment = Union[bytes, str]  # bytes: literal text; str: a variable name


@dataclass(frozen=True)
class ValueSyntax:
    """How one variable's logged value looks under the format's escape mode.

    ``atom`` is a regex matching one unit of the value; ``never`` the bytes that
    are never written raw inside it; ``stops`` the bytes at which a greedy run
    of atoms is bound to end (``never``, plus ``"`` for JSON strings, whose
    inner quotes always come as ``\\"``). ``structure`` (the ``$upstream_*``
    lists) matches whole entries and separators, as many as it can;
    ``shortest`` the same, as few as it can.
    """

    atom: bytes
    never: FrozenSet[int]
    stops: FrozenSet[int]
    structure: Optional[bytes] = None
    shortest: Optional[bytes] = None


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
ENTRY_BYTES: Dict[str, FrozenSet[int]] = {
    name: _NUMBER_BYTES for name in _ATTEMPT_ENTRIES if name != "upstream_addr"
}
ENTRY_BYTES["upstream_addr"] = frozenset(range(256)) - frozenset(b' \t\n\r\x0b\x0c,"')


def _attempt_structure(name: str, escape: str, shortest: bool = False) -> Optional[bytes]:
    """Whole entries and separators; ``shortest``: as few entries as the rest of the pattern allows."""
    entry = _ATTEMPT_ENTRIES.get(name)
    if entry is None:
        return None
    if shortest and name == "upstream_addr":
        entry = rb'[^\s,"]+?'  # the numbers' entries end by themselves; an address does not
    lazy = b"?" if shortest else b""
    body = entry + b"(?:" + _ATTEMPT_SEPARATOR + entry + b")*" + lazy
    # escape=json writes an unset variable as an empty string, not "-"
    return b"(?:" + body + b")?" + lazy if escape == "json" else body


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


def value_syntax(name: str, escape: str) -> ValueSyntax:
    """What the value of ``$name`` can look like in a line written with ``escape``."""
    known = _KNOWN_ALPHABETS.get(name)
    structure = _attempt_structure(name, escape)
    shortest = _attempt_structure(name, escape, shortest=True)
    if known is not None:
        allowed = frozenset(known)
    elif escape == "default":
        allowed = _DEFAULT_RAW
    elif escape == "json":
        return ValueSyntax(_JSON_ATOM, _CONTROL, _CONTROL | {ord('"')}, structure, shortest)
    else:
        allowed = _ALL_BYTES - {ord("\n")}
    never = _ALL_BYTES - allowed
    return ValueSyntax(_char_class(allowed), never, never, structure, shortest)


def pattern_segments(pattern: str) -> List[Segment]:
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


# Each escape mode's decoder: the raw value back as nginx had it, as UTF-8 (errors replaced).
DECODERS: Dict[str, Callable[[bytes], str]] = {"default": _decode_default, "json": _decode_json, "none": _decode_none}
