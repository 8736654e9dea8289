"""Map server addresses as written in the config to the forms nginx logs in ``$upstream_addr``."""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, List, Set, Tuple

Resolver = Callable[[str, int], List[str]]
DEFAULT_PORT = 80


def system_resolver(host: str, port: int) -> List[str]:
    """IP addresses of ``host`` as the system resolves them (empty when it cannot)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return [str(info[4][0]) for info in infos]


def _split_host_port(address: str) -> Tuple[str, int]:
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    return host, int(port) if port.isdigit() else DEFAULT_PORT


def _logged(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def logged_forms(address: str, resolver: Resolver = system_resolver) -> Set[str]:
    """Every ``$upstream_addr`` entry that traffic to ``address`` (as written) can show.

    ``unix:`` paths stay as they are; IP literals get nginx's default port 80 when
    written without one; host names are resolved like nginx does at start-up (all
    addresses). An unresolvable name gives an empty set.
    """
    if address.startswith("unix:"):
        return {address}
    host, port = _split_host_port(address)
    try:
        return {_logged(str(ipaddress.ip_address(host)), port)}
    except ValueError:
        pass
    return {_logged(ip, port) for ip in resolver(host, port)}
