"""A whole nginx configuration as nginx-canary sees it: upstreams and their servers, log formats,
access logs and where upstreams are proxied to. Frozen data, built by :func:`nginx_canary.nginx.conf.load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from nginx_canary.errors import BadInputError, ConfigError


#: Where nginx has ``upstream`` blocks, each with its own namespace.
UPSTREAM_CONTEXTS: Tuple[str, ...] = ("http", "stream")


@dataclass(frozen=True)
class UpstreamServer:
    """A ``server`` line of an upstream block, as written."""

    address: str
    params: Tuple[str, ...]
    file: str
    line: int

    @property
    def weight(self) -> int:
        """The ``weight=`` in effect (1 when absent or unreadable; nginx -t judges the rest)."""
        for param in reversed(self.params):
            if param.startswith("weight="):
                raw = param[len("weight="):]
                return int(raw) if raw.isdigit() and int(raw) > 0 else 1
        return 1

    @property
    def down(self) -> bool:
        return "down" in self.params

    @property
    def backup(self) -> bool:
        return "backup" in self.params

    @property
    def flags(self) -> Tuple[str, ...]:
        """Every parameter but ``weight=``: ``down``, ``backup``, ``max_fails=3``, ..."""
        return tuple(p for p in self.params if not p.startswith("weight="))


@dataclass(frozen=True)
class Upstream:
    """An ``upstream NAME { ... }`` block."""

    name: str
    context: str
    file: str
    line: int
    servers: Tuple[UpstreamServer, ...]
    #: The arguments of the block's ``hash`` directive (``("$cookie_uid", "consistent")``), None without one.
    hash_args: Optional[Tuple[str, ...]] = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def share_percent(self, server: UpstreamServer) -> float:
        """The share of traffic ``server`` gets in percent (0 when down or backup)."""
        active = [s for s in self.servers if not s.down and not s.backup]
        total = sum(s.weight for s in active)
        if server not in active or total == 0:
            return 0.0
        return 100.0 * server.weight / total


@dataclass(frozen=True)
class LogFormatDef:
    """A ``log_format`` directive: ``args`` (name, [escape=], strings...) with escapes read as nginx does."""

    name: str
    args: Tuple[str, ...]
    context: str
    file: str
    line: int


@dataclass(frozen=True)
class AccessLog:
    """An ``access_log PATH [FORMAT]`` directive; ``path`` None is nginx's compiled-in default log."""

    path: Optional[str]
    format: str
    file: Optional[str]
    line: Optional[int]


@dataclass(frozen=True)
class ProxyPass:
    """A ``proxy_pass`` (or ``fastcgi_pass``, ...) and the access logs in effect where it stands."""

    target: str
    access_logs: Tuple[AccessLog, ...]
    file: str
    line: int


@dataclass(frozen=True)
class NginxConfig:
    """What nginx-canary needs to know of a whole configuration."""

    conf_path: str
    files: Tuple[str, ...]
    upstreams: Tuple[Upstream, ...]
    pid: Optional[str] = None
    error_logs: Tuple[str, ...] = field(default_factory=tuple)
    log_formats: Tuple[LogFormatDef, ...] = field(default_factory=tuple)
    access_logs: Tuple[AccessLog, ...] = field(default_factory=tuple)
    proxies: Tuple[ProxyPass, ...] = field(default_factory=tuple)
    #: ``load_module`` paths as written (relative ones are relative to nginx's prefix).
    modules: Tuple[str, ...] = field(default_factory=tuple)

    def log_format(self, name: str) -> Optional[LogFormatDef]:
        """The http ``log_format`` called ``name`` (None when the config has none by that name)."""
        found = [f for f in self.log_formats if f.name == name and f.context == "http"]
        return found[-1] if found else None

    def access_logs_for(self, upstream: str) -> Tuple[AccessLog, ...]:
        """The access logs written where ``upstream`` is proxied to, in config order, without repeats."""
        out: List[AccessLog] = []
        for proxy in self.proxies:
            if proxy.target == upstream:
                out.extend(log for log in proxy.access_logs if log not in out)
        return tuple(out)

    def upstream(self, name: str, context: Optional[str] = None) -> Upstream:
        """The one upstream called ``name``, in ``context`` (``http`` or ``stream``) when given.

        nginx keeps http's and stream's upstreams apart, so one name may stand
        in both: without ``context`` the http one is meant, and an upstream
        found only in ``stream`` is found too.

        Raises:
            BadInputError: no upstream has that name (in that context), or ``context`` is not http/stream.
            ConfigError: more than one upstream has it in the same context.
        """
        if context is not None and context not in UPSTREAM_CONTEXTS:
            raise BadInputError(f"context must be one of {', '.join(UPSTREAM_CONTEXTS)}, got {context!r}")
        named = [u for u in self.upstreams if u.name == name]
        found = [u for u in named if u.context == context] if context else named
        if not found:
            if named:
                where = ", ".join(f"{u.context} ({u.location})" for u in named)
                raise BadInputError(f"no upstream named {name!r} in {context} {{}} of {self.conf_path}; "
                                    f"it is defined in {where}")
            known = ", ".join(sorted({u.name for u in self.upstreams})) or "none"
            raise BadInputError(f"no upstream named {name!r} in {self.conf_path} (upstreams: {known})")
        if context is None and len({u.context for u in found}) > 1:
            found = [u for u in found if u.context == "http"] or found
        if len(found) > 1:
            where = ", ".join(u.location for u in found)
            raise ConfigError(f"upstream {name!r} is defined {len(found)} times: {where}")
        return found[0]

    def other_contexts(self, upstream: Upstream) -> Tuple[str, ...]:
        """The other contexts that also hold an upstream named like ``upstream`` (``("stream",)`` for a twin)."""
        return tuple(sorted({u.context for u in self.upstreams if u.name == upstream.name} - {upstream.context}))


def servers_named(upstream: Upstream, addresses: Iterable[str]) -> List[UpstreamServer]:
    """The servers of ``upstream`` written with these addresses, in file order.

    Raises:
        BadInputError: an address is not a server of the upstream, names a
            ``backup`` server, or is written more than once in it.
    """
    wanted = list(dict.fromkeys(addresses))
    by_address: Dict[str, List[UpstreamServer]] = {}
    for server in upstream.servers:
        by_address.setdefault(server.address, []).append(server)
    for address in wanted:
        found = by_address.get(address, [])
        if not found:
            known = ", ".join(s.address for s in upstream.servers) or "none"
            raise BadInputError(f"{address!r} is not a server of upstream {upstream.name!r} (servers: {known})")
        if len(found) > 1:
            raise BadInputError(f"{address!r} is written {len(found)} times in upstream {upstream.name!r}; cannot tell them apart")
        if found[0].backup:
            raise BadInputError(f"{address!r} is a backup server of upstream {upstream.name!r}; backup servers are never touched")
    return [s for s in upstream.servers if s.address in wanted]
