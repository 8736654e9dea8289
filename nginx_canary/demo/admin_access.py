"""Who may use the demo app's admin endpoint: a loopback peer, a loopback ``Host`` and no forwarding header.

Behind a local reverse proxy every peer is 127.0.0.1, so the peer check alone
would let anyone reach the endpoint through the proxy. nginx sends ``Host:
<upstream name>`` by default, which already fails the check; a demo config
should also set ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Mapping, Optional

FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "Via")


def is_loopback_address(host: str) -> bool:
    """True for an address in 127.0.0.0/8, ``::1`` or IPv4-mapped loopback; False otherwise (names included)."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _host_header_name(value: str) -> str:
    value = value.strip()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def admin_refusal(peer: str, headers: Mapping[str, str],
                  peer_allowed: Callable[[str], bool] = is_loopback_address) -> Optional[str]:
    """Why an admin request from ``peer`` with ``headers`` is refused, or None when it is allowed.

    ``headers`` should be case-insensitive (``http.client.HTTPMessage``). Raises nothing.
    """
    if not peer_allowed(peer):
        return f"the admin endpoint is loopback-only (peer {peer})"
    for name in FORWARDING_HEADERS:
        if headers.get(name) is not None:
            return f"the admin endpoint refuses proxied requests ({name} header present)"
    host = _host_header_name(headers.get("Host") or "")
    if host.lower() != "localhost" and not is_loopback_address(host):
        return f"the admin endpoint needs a loopback Host header, not {host!r}"
    return None
