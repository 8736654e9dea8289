"""How values are spelled in the config (and in the CLI's DURATION options): numbers, durations, hosts, URLs."""

from __future__ import annotations

import ipaddress
import re
from fractions import Fraction
from typing import Optional

from nginx_canary.domain import MAX_DURATION_MS
from nginx_canary.errors import BadInputError
from nginx_canary.text import quoted

# Leading zeros are refused: YAML 1.1 reads `010` as octal 8.
DECIMAL = re.compile(r"\A-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?\Z")
INTEGER = re.compile(r"\A-?(?:0|[1-9][0-9]{0,14})\Z")
DURATION = re.compile(r"\A(-?(?:0|[1-9][0-9]{0,9})(?:\.[0-9]{1,9})?)(ms|s|m|h)?\Z")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
DURATION_EXAMPLES = "a duration like 250ms, 10s or 5m"

_HOSTNAME = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
PORT = re.compile(r"\A[1-9][0-9]{0,4}\Z")
#: The longest URL accepted: longer ones are refused by many servers and proxies anyway.
MAX_URL_LENGTH = 2048


def parse_duration(text: str) -> float:
    """Seconds from ``250ms``, ``1.5s``, ``10s``, ``5m``, ``1h`` or a bare number of seconds.

    The same rules as durations in the YAML (millisecond resolution, above 0,
    at most 720h). Raises BadInputError with a one-line message.
    """
    match = DURATION.match(text)
    if match is None:
        raise BadInputError(f"expected {DURATION_EXAMPLES}, got {quoted(text)}")
    ms = Fraction(match.group(1)) * _UNIT_MS[match.group(2) or "s"]
    if ms <= 0:
        raise BadInputError(f"must be greater than 0, got {quoted(text)}")
    if ms.denominator != 1:
        raise BadInputError(f"durations have millisecond resolution, got {quoted(text)}")
    if ms > MAX_DURATION_MS:
        raise BadInputError(f"must be at most 720h (30 days), got {quoted(text)}")
    return float(ms / 1000)


def seconds(value: float) -> str:
    """A duration in seconds as messages show it (``2.5s``)."""
    return f"{value:g}s"


def url_problem(text: str) -> Optional[str]:
    """Why ``text`` is not an acceptable webhook, gate or check URL, or None when it is.

    Accepted: ``http://`` or ``https://`` (any case), an optional ``user:password@``,
    a host (IPv4 address, bracketed IPv6 address or DNS name), an optional
    port 1-65535, then any path, query and fragment; printable ASCII only (no
    spaces: percent-encode them), no backslash (parsers disagree on where a
    host ends around one), at most :data:`MAX_URL_LENGTH` characters. The
    reasons quote the faulty part (host, port, character), not the URL: its
    path and query may hold a token (the error names the key and line).
    """
    if len(text) > MAX_URL_LENGTH:
        return f"URL is {len(text)} characters long, more than the {MAX_URL_LENGTH} allowed"
    for char in text:
        if not char.isascii():
            return (f"URL contains the non-ASCII character {char!r} (write host names in punycode and "
                    "percent-encode the rest)")
        if not char.isprintable() or char in " \\":
            return f"URL contains the character {char!r}, which a URL cannot hold (percent-encode it)"
    scheme, colon_slashes, rest = text.partition("://")
    if not colon_slashes or scheme.lower() not in ("http", "https"):
        return f"expected an http:// or https:// URL, got {quoted(text)}"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    hostport = authority.rpartition("@")[2]
    host, port = hostport, None
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, after = (hostport[:end], hostport[end:]) if end else (hostport, "")
        if after:
            port = after[1:] if after.startswith(":") else after
    elif ":" in hostport:
        host, _, port = hostport.partition(":")
    if not host:
        return "URL has no host"
    if not is_host(host):
        return f"URL has an invalid host {quoted(host)}"
    if port is not None and not (PORT.match(port) and int(port) <= 65535):
        return f"URL has an invalid port {quoted(port)} (1 to 65535)"
    return None


def is_host(host: str) -> bool:
    """An IPv4 address, a bracketed IPv6 address or a DNS name."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        # All-digit labels are a mistyped IPv4 address, not a hostname.
        return bool(_HOSTNAME.match(host)) and not host.replace(".", "").isdigit()
    return True
