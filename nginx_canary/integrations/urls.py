"""How a webhook, gate or HTTP-check URL is shown: scheme, host and port, nothing else.

Such URLs often carry a secret: a token in the path (Slack's webhooks, many
CI "deploy gate" endpoints), in the query (``?token=``), or a
``user:password@``. Every log line, status message, history record, state
file, report and webhook body shows :func:`redact_url` of a URL, never the URL
itself; only the HTTP client that calls it sees the whole of it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
UNREADABLE = "(unreadable URL)"


def redact_url(url: str) -> str:
    """``scheme://host:port`` of ``url``; never raises.

    No ``user:password@``, path, query or fragment. The port is the one
    written, else the scheme's default (80, 443); an IPv6 host keeps its
    brackets. Anything that does not read as a URL with a host gives
    :data:`UNREADABLE`, so no part of it is shown.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:  # a bad port or bracket: urlsplit checks some of it lazily
        return UNREADABLE
    if not scheme or not host or not scheme.isascii() or not scheme.isalnum():
        return UNREADABLE
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    shown = f"[{host}]" if ":" in host else host
    if not all(c.isascii() and c.isprintable() and c not in "/?#@ " for c in shown):
        return UNREADABLE
    return f"{scheme}://{shown}" + (f":{port}" if port is not None else "")
