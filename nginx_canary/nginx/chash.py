"""A faithful model of nginx's consistent-hash ring (``hash KEY consistent``), for measuring shares offline.

It follows ``ngx_http_upstream_update_chash`` and ``ngx_http_upstream_get_chash_peer``
(src/http/modules/ngx_http_upstream_hash_module.c): a server written
``HOST:PORT`` gets ``160 x weight`` points; point ``j``'s hash is
``crc32(HOST "\\0" PORT PREV)`` where ``PREV`` is point ``j-1``'s hash as 4
little-endian bytes (0 for the first), so a point depends only on the server's
name and its index; points are sorted and equal hashes kept once. A key goes to
the first point whose hash is ``>= crc32(KEY)`` (past the last point: the
first), and from a point whose server is ``down`` on to the next one, at most
20 times; after that, or with an empty key, nginx falls back to weighted round
robin. Names that resolve to several addresses share their points (nginx
dedups them); the model works per name, as the ring does.
"""

from __future__ import annotations

import bisect
import struct
import zlib
from typing import AbstractSet, Dict, List, Optional, Sequence, Tuple

POINTS_PER_WEIGHT = 160
#: nginx moves on from a down server's point at most this many times before round robin.
MAX_TRIES = 20
_RING = 1 << 32


def _host_port(server: str) -> Tuple[bytes, bytes]:
    raw = server.encode()
    if raw[:5].lower() == b"unix:":
        return raw[5:], b""
    for j in range(len(raw)):
        c = raw[len(raw) - j - 1]
        if c == ord(":"):
            return raw[:len(raw) - j - 1], raw[len(raw) - j:]
        if not ord("0") <= c <= ord("9"):
            break
    return raw, b""


def server_points(server: str, weight: int) -> List[int]:
    """The ring hashes nginx gives ``server`` (as written in its ``server`` line) at ``weight``."""
    host, port = _host_port(server)
    base = zlib.crc32(port, zlib.crc32(b"\0", zlib.crc32(host)))
    out: List[int] = []
    prev = 0
    pack = struct.Struct("<I").pack
    for _ in range(POINTS_PER_WEIGHT * weight):
        prev = zlib.crc32(pack(prev), base)
        out.append(prev)
    return out


class Ring:
    """The sorted points of one upstream's servers: ``servers`` is ``[(name, weight), ...]`` in config order."""

    def __init__(self, servers: Sequence[Tuple[str, int]]) -> None:
        tagged = sorted((h, i) for i, (name, weight) in enumerate(servers) for h in server_points(name, weight))
        self.names = [name for name, _ in servers]
        self.hashes: List[int] = []
        self.owners: List[int] = []
        for h, i in tagged:
            if not self.hashes or self.hashes[-1] != h:
                self.hashes.append(h)
                self.owners.append(i)

    def _owner_from(self, index: int, down: AbstractSet[str]) -> Optional[str]:
        n = len(self.hashes)
        for tries in range(MAX_TRIES + 1):
            name = self.names[self.owners[(index + tries) % n]]
            if name not in down:
                return name
        return None

    def lookup(self, key: str, down: AbstractSet[str] = frozenset()) -> Optional[str]:
        """The server ``key`` goes to; None where nginx falls back to round robin (empty key, 20 down points)."""
        if not key or not self.hashes:
            return None
        index = bisect.bisect_left(self.hashes, zlib.crc32(key.encode()))
        return self._owner_from(index, down)

    def shares(self, down: AbstractSet[str] = frozenset()) -> Dict[str, float]:
        """Each server's share of the hash space in percent (what many distinct keys give); "" for round robin."""
        out: Dict[str, float] = {}
        prev = self.hashes[-1] - _RING
        for index, h in enumerate(self.hashes):
            name = self._owner_from(index, down) or ""
            out[name] = out.get(name, 0.0) + (h - prev) * 100.0 / _RING
            prev = h
        return out
