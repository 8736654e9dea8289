"""Can a client forge the fields the analysis reads? A check of a ``log_format``, before any line is read.

A client controls the text of many variables (its headers, its URI, its
cookies...). If such a value can hold the literal text that follows it in the
format, the parser cannot tell where the value ends: a client sending
``User-Agent: x 10.0.0.2:80 500 0.1`` to a server logging
``$http_user_agent $upstream_addr $upstream_status $request_time`` writes a
line whose first fields look like a canary 500, and the analysis counts it.
Under ``escape=none`` a value that can hold a newline writes whole lines.

:func:`check_format` refuses a format where a variable known to carry client
text sits, with nothing it cannot write in between, before a field the
analysis reads; for a variable it does not know (a ``map``, a ``set``...) it
only warns, since such a value may or may not come from the client. A format
of the "split" strategy (the shipped ``canary`` format) always passes: its
separator is written escaped inside every value.

What a client can send is what nginx 1.22 accepts (measured): request header
values hold any byte but NUL, CR and LF; the request line holds no control
byte, space or DEL (400 otherwise); ``Host`` also no ``/``; ``$uri`` is
%-decoded, so it holds any byte, a newline too; a method is ``[A-Z_-]``.
``$request`` is the whole request line, spaces included, and for a request
nginx refuses with 400 every byte the client sent up to CR or LF
(``ngx_http_variable_request_line``); ``$remote_user`` is the Basic
credentials' text before their first ``:`` (``ngx_http_auth_basic_user``).

A value the parser bounds from the right (:mod:`nginx_canary.logs.anchors`:
the last occurrence of the text after it is the real one, as for the
``$request`` of the widely copied ``upstreamlog`` format) forges nothing after
it, whatever it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

from nginx_canary.errors import LogFormatError
from nginx_canary.logs.anchors import right_anchored
from nginx_canary.logs.format import CANARY_SNIPPET, CompiledFormat, UpstreamFields
from nginx_canary.logs.syntax import ENTRY_BYTES, Segment, value_syntax

_ALL = frozenset(range(256))
_NEWLINE = ord("\n")
_HEADER = _ALL - {0, ord("\r"), _NEWLINE}
_REQUEST_LINE = frozenset(range(0x21, 0x7F)) | frozenset(range(0x80, 0x100))
_HOST = frozenset(range(0x21, 0x100)) - {ord("/")}
_METHOD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_-")

# Client-controlled variables and the bytes a client can put in their values.
_CLIENT_PREFIXES: Tuple[Tuple[str, FrozenSet[int]], ...] = (
    ("http_", _HEADER), ("cookie_", _HEADER), ("arg_", _REQUEST_LINE),
)
_CLIENT: Dict[str, FrozenSet[int]] = {
    "request": _ALL - {ord("\r"), _NEWLINE}, "request_uri": _REQUEST_LINE, "args": _REQUEST_LINE, "query_string": _REQUEST_LINE,
    "uri": _ALL, "document_uri": _ALL, "request_filename": _ALL, "fastcgi_script_name": _ALL,
    "fastcgi_path_info": _ALL, "request_body": _ALL, "remote_user": _ALL - {ord(":")}, "binary_remote_addr": _ALL,
    "host": _HOST, "ssl_server_name": _HOST, "content_type": _HEADER, "proxy_add_x_forwarded_for": _HEADER,
    "request_method": _METHOD,
    # a client certificate's fields, when nginx asks for one
    **{f"ssl_client_{part}": _HEADER for part in ("s_dn", "i_dn", "s_dn_legacy", "i_dn_legacy", "cert",
                                                   "raw_cert", "escaped_cert")},
}
# Variables nginx fills from its own state or from the config: never client text.
_TRUSTED = frozenset({
    "status", "body_bytes_sent", "bytes_sent", "request_length", "connection", "connection_requests", "pid",
    "remote_port", "server_port", "msec", "request_time", "pipe", "request_id", "time_iso8601", "time_local",
    "remote_addr", "server_addr", "realip_remote_addr", "realip_remote_port", "upstream_addr", "upstream_status",
    "upstream_response_time", "upstream_connect_time", "upstream_header_time", "upstream_bytes_received",
    "upstream_bytes_sent", "upstream_response_length", "upstream_cache_status", "proxy_host", "proxy_port",
    "scheme", "https", "server_name", "server_protocol", "hostname", "nginx_version", "document_root",
    "realpath_root", "request_completion", "content_length", "is_args", "invalid_referer", "gzip_ratio",
    "limit_rate", "limit_req_status", "limit_conn_status", "ssl_protocol", "ssl_cipher", "ssl_session_reused",
    "ssl_session_id", "ssl_early_data", "http2", "http3", "connection_time", "request_body_file",
    "date_local", "date_gmt", "uid_got", "uid_set", "uid_reset", "secure_link",
})
# Written by the backend, which the analysis judges; not the client.
_TRUSTED_PREFIXES = ("upstream_http_", "upstream_cookie_", "upstream_trailer_", "sent_http_", "sent_trailer_",
                     "tcpinfo_")

_ATTEMPT_SEPARATOR_BYTES = frozenset(b", :")
_DEFAULT_PLAIN = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}
_DEFAULT_ESCAPES = frozenset(b"\\x0123456789ABCDEF")
_JSON_PLAIN = _ALL - frozenset(range(0x20)) - {ord('"'), ord("\\")}
# A '"' escape=json writes is always after a backslash, which the parser reads with it: never raw.
_JSON_ESCAPES = frozenset(b"\\nrtbfu0123456789abcdef")


@dataclass(frozen=True)
class Forgery:
    """``variable`` can write the text of ``target`` (a field the analysis reads).

    ``client``: the variable is known to carry client text (else nginx-canary
    does not know it). ``lines``: it can write a newline, so whole lines.
    ``through``: the literal after it that it can hold (empty for ``lines``).
    """

    variable: str
    target: str
    client: bool
    lines: bool
    through: bytes


def client_bytes(name: str) -> Optional[FrozenSet[int]]:
    """What a client can put in ``$name``'s value (before escaping); None unless it is a known client variable."""
    if name in _CLIENT:
        return _CLIENT[name]
    for prefix, allowed in _CLIENT_PREFIXES:
        if name.startswith(prefix):
            return allowed
    return None


def is_trusted(name: str) -> bool:
    """Whether nginx fills ``$name`` from its own state, the config or the backend, never from client text."""
    return name in _TRUSTED or name.startswith(_TRUSTED_PREFIXES)


def _logged(raw: FrozenSet[int], escape: str) -> FrozenSet[int]:
    """The bytes a value made of ``raw`` bytes can show in the log line under ``escape``."""
    if escape == "none":
        return raw
    plain = raw & (_DEFAULT_PLAIN if escape == "default" else _JSON_PLAIN)
    if raw - plain:
        return plain | (_DEFAULT_ESCAPES if escape == "default" else _JSON_ESCAPES)
    return plain


def _possible(name: str, escape: str) -> Tuple[FrozenSet[int], bool]:
    """(bytes ``$name`` can show in the line, whether it is a known client variable)."""
    known = client_bytes(name)
    if known is not None:
        return _logged(known, escape), True
    syntax = value_syntax(name, escape)
    allowed = _ALL - syntax.stops
    # Under escape=none a variable nginx-canary does not know may hold a newline ($uri through a map).
    return (allowed | {_NEWLINE} if escape == "none" else allowed), False


def _absorbs(segments: Tuple[Segment, ...], w: int, escape: str) -> FrozenSet[int]:
    """The bytes the parser lets the value at ``segments[w]`` span (an entry's, when it is read entry by entry)."""
    name = segments[w]
    assert isinstance(name, str)
    syntax = value_syntax(name, escape)
    nxt = segments[w + 1] if w + 1 < len(segments) else None
    if syntax.structure is not None and isinstance(nxt, bytes) and nxt[0] not in ENTRY_BYTES[name]:
        return ENTRY_BYTES[name] | _ATTEMPT_SEPARATOR_BYTES
    return _ALL - syntax.stops


def _literal_bytes(segments: Tuple[Segment, ...], start: int, end: int) -> FrozenSet[int]:
    return frozenset(b for s in segments[start:end] if isinstance(s, bytes) for b in s)


def _forges(segments: Tuple[Segment, ...], k: int, at: int, possible: FrozenSet[int], escape: str) -> bool:
    """Whether the value at ``k`` can forge the one at ``at`` (> k).

    The client writes the literals after ``k`` and fake values up to some value
    ``w`` after ``at``, and starts ``w``'s; the real text then follows (the
    literal after ``k`` on), and ``w`` has to span it up to the real ``w``'s
    end, after which the real line fits the rest of the format as it is. So
    the literals between ``k`` and ``w`` must be text the client can write and
    text ``w`` can span (an upstream field read entry by entry spans only what
    one entry may hold, and its separators). ``w`` may be the forged value
    itself only when it keeps its forged part (:func:`_keeps_first_entries`):
    a single value that takes the real text too is no forged figure.
    """
    for w in range(at, len(segments)):
        spanned = _literal_bytes(segments, k + 1, w)
        if w == at and not _keeps_first_entries(str(segments[at]), spanned, escape):
            continue
        if isinstance(segments[w], str) and spanned <= possible & _absorbs(segments, w, escape):
            return True
    return False


def _keeps_first_entries(name: str, spanned: FrozenSet[int], escape: str) -> bool:
    """Whether a list of attempts that spans the real text after its forged entries keeps them.

    Its later entries take the real text: a status or time that does not parse
    leaves the forged ones standing, but an address no nginx writes (one made
    of anything but entries and separators) drops the whole line.
    """
    if value_syntax(name, escape).structure is None:
        return False
    return name != "upstream_addr" or spanned <= _ATTEMPT_SEPARATOR_BYTES


def find_forgeries(compiled: CompiledFormat, fields: UpstreamFields) -> List[Forgery]:
    """Every variable whose value can forge a field the analysis reads (the first such field), in format order."""
    if compiled.strategy == "split":
        return []
    segments, escape = compiled.segments, compiled.spec.escape
    first_at: Dict[str, int] = {}
    for i, seg in enumerate(segments):
        if isinstance(seg, str):
            first_at.setdefault(seg, i)
    targets = sorted((first_at[t], t) for t in fields.read())
    out: List[Forgery] = []
    for k, seg in enumerate(segments):
        if not isinstance(seg, str) or is_trusted(seg):
            continue
        possible, client = _possible(seg, escape)
        if _NEWLINE in possible:
            out.append(Forgery(seg, targets[0][1], client, True, b""))
            continue
        if right_anchored(segments, k, escape):
            continue
        for at, target in targets:
            if at > k and _forges(segments, k, at, possible, escape):
                following = segments[k + 1]
                out.append(Forgery(seg, target, client, False, following if isinstance(following, bytes) else b""))
                break
    return out


def _describe(forgery: Forgery, name: str) -> str:
    if forgery.lines:
        return (f"log format {name!r} lets a client write whole log lines: ${forgery.variable} can hold a newline "
                f"under escape=none")
    holds = f"the {forgery.through.decode('utf-8', 'replace')!r} that follows it" if forgery.through else "any text"
    return (f"log format {name!r} lets a client forge ${forgery.target}: ${forgery.variable} comes before it "
            f"and can hold {holds}")


def _fix(forgery: Forgery) -> str:
    if forgery.lines:
        return f"use escape=default or escape=json, or the 'canary' log_format from {CANARY_SNIPPET}"
    return (f"put ${forgery.variable} after the upstream fields (or between quotes, with escape=default or json), "
            f"or use the 'canary' log_format from {CANARY_SNIPPET}")


def check_format(compiled: CompiledFormat, fields: UpstreamFields) -> List[str]:
    """Refuse a format a client can forge; return one-line warnings for variables that may be client text.

    Raises:
        LogFormatError: a known client variable can forge a field the analysis
            reads; the one-line message names the variable, the field and the fix.
    """
    found = find_forgeries(compiled, fields)
    name = compiled.spec.name
    for forgery in found:
        if forgery.client:
            raise LogFormatError(f"{_describe(forgery, name)}; {_fix(forgery)}")
    return [f"{_describe(f, name)}, if a client can set ${f.variable}; {_fix(f)}" for f in _unknown(found)]


def _unknown(found: List[Forgery]) -> Iterator[Forgery]:
    seen = set()
    for forgery in found:
        if forgery.variable not in seen:
            seen.add(forgery.variable)
            yield forgery
