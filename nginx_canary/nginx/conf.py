"""Read an nginx configuration (main file and every include) into a typed model.

Parsing is crossplane's, one file at a time (``single=True``); includes are
followed here the way nginx resolves them: relative paths against the main
file's directory, globs expanded in sorted order, a glob matching nothing is
fine, a plain path that does not exist is an error. Parsed files can be kept in
a :class:`ParseCache` keyed by inode, size and mtime, so that a large tree of
includes is only re-read where it changed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import crossplane

from nginx_canary.errors import BadInputError, ConfigError
from nginx_canary.fsutil import TEMP_SUFFIX, discard
from nginx_canary.nginx.lexer import unescape

Tree = List[Dict[str, Any]]
_GLOB_CHARS = "*?["
_BLOCK_CONTEXTS = {"http", "stream", "mail", "events"}
_PASS_DIRECTIVES = {"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass"}
_KEPT_DIRECTIVES = {"include", "server", "pid", "error_log", "log_format", "access_log",
                    "load_module"} | _PASS_DIRECTIVES


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

    def upstream(self, name: str) -> Upstream:
        """The one upstream called ``name``.

        Raises:
            BadInputError: no upstream has that name.
            ConfigError: more than one upstream has it.
        """
        found = [u for u in self.upstreams if u.name == name]
        if not found:
            known = ", ".join(sorted({u.name for u in self.upstreams})) or "none"
            raise BadInputError(f"no upstream named {name!r} in {self.conf_path} (upstreams: {known})")
        if len(found) > 1:
            where = ", ".join(u.location for u in found)
            raise ConfigError(f"upstream {name!r} is defined {len(found)} times: {where}")
        return found[0]


def _valid_tree(tree: Any) -> bool:
    """Whether ``tree`` has the shape :func:`_prune` gives (a cache file is data from disk, checked before use)."""
    pending = [tree]
    while pending:
        block = pending.pop()
        if type(block) is not list:
            return False
        for stmt in block:
            if type(stmt) is not dict:
                return False
            args = stmt.get("args")
            if type(stmt.get("directive")) is not str or type(stmt.get("line")) is not int or type(args) is not list:
                return False
            for arg in args:
                if type(arg) is not str:
                    return False
            if "block" in stmt:
                pending.append(stmt["block"])
    return True


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Decoding many small dicts triggers the cyclic GC over and over; they hold no cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ParseCache:
    """crossplane trees of single files, reused while a file's inode, size and mtime stay the same.

    Kept as JSON, which is data only: a cache file is never code. A cache that
    cannot be read, is not valid, or cannot be written is ignored: it only
    saves time. The file is written under a random temporary name
    (``mkstemp``: ``O_EXCL|O_NOFOLLOW``; named like
    :func:`~nginx_canary.fsutil.atomic_write`'s, so a leftover one is swept)
    and renamed into place; it is read without following a symlink.
    """

    #: The ``version`` key of the file; bump it when what :func:`_prune` keeps changes.
    VERSION = 4

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._entries: Dict[str, Tuple[Tuple[int, int, int, int], Tree]] = {}
        self._dirty = False
        if path:
            self._entries = self._load(path)

    @staticmethod
    def _load(path: str) -> Dict[str, Tuple[Tuple[int, int, int, int], Tree]]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return {}
                with _gc_paused():
                    loaded = json.loads(fh.read())
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(loaded, dict) or loaded.get("version") != ParseCache.VERSION \
                or not isinstance(loaded.get("entries"), dict):
            return {}
        entries: Dict[str, Tuple[Tuple[int, int, int, int], Tree]] = {}
        for file, entry in loaded["entries"].items():
            # A file's tree is checked when it is used (get), so a large cache is not walked twice.
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list) and len(entry[0]) == 4 \
                    and all(type(n) is int for n in entry[0]):
                entries[file] = (tuple(entry[0]), entry[1])  # type: ignore[assignment]
        return entries

    @staticmethod
    def _key(path: str) -> Tuple[int, int, int, int]:
        st = os.stat(path)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, path: str) -> Optional[Tree]:
        entry = self._entries.get(path)
        if entry is None:
            return None
        try:
            if entry[0] != self._key(path):
                return None
        except OSError:
            return None
        if not _valid_tree(entry[1]):
            del self._entries[path]
            return None
        return entry[1]

    def put(self, path: str, key: Tuple[int, int, int, int], tree: Tree) -> None:
        self._entries[path] = (key, tree)
        self._dirty = True

    def save(self, background: bool = False) -> None:
        """Write the cache if it changed; with ``background``, in a thread the interpreter waits for at exit."""
        if not self.path or not self._dirty:
            return
        if background:
            # Overlaps with nginx -t and the reload, which leave this process waiting.
            try:
                threading.Thread(target=self._write, name="parse-cache-save").start()
                return
            except RuntimeError:
                # "can't start new thread" (task limit reached): a cache is not
                # worth failing a change or a rollback for; write it here instead.
                pass
        self._write()

    def _write(self) -> None:
        assert self.path is not None
        data = json.dumps({"version": self.VERSION, "entries": self._entries}, separators=(",", ":")).encode()
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix="." + os.path.basename(self.path) + ".",
                                       suffix=TEMP_SUFFIX)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
            tmp = None
            self._dirty = False
        except OSError:
            pass
        finally:
            discard(tmp)


def _prune(tree: Tree) -> Tree:
    """Keep only what the model reads, so cached trees stay small and quick to load."""
    out: Tree = []
    for stmt in tree:
        name = stmt["directive"]
        if "block" in stmt:
            block = _prune(stmt["block"])
            if block or name == "upstream":
                out.append({"directive": name, "line": stmt["line"], "args": stmt["args"], "block": block})
        elif name in _KEPT_DIRECTIVES:
            out.append({"directive": name, "line": stmt["line"], "args": stmt["args"]})
    return out


def _parse_file(path: str, cache: Optional[ParseCache]) -> Tree:
    if cache is not None:
        hit = cache.get(path)
        if hit is not None:
            return hit
    try:
        key = ParseCache._key(path)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from exc
    payload = crossplane.parse(path, single=True, comments=False, check_ctx=False, check_args=False)
    if payload["status"] != "ok" or payload["errors"]:
        first = payload["errors"][0]
        raise ConfigError(str(first.get("error", "parse error")), file=first.get("file", path), line=first.get("line"))
    tree = _prune(payload["config"][0]["parsed"])
    if cache is not None:
        cache.put(path, key, tree)
    return tree


Item = Tuple[Dict[str, Any], str, Tuple[str, ...]]


def _pass_target(value: str) -> str:
    """The upstream/host part of a ``proxy_pass`` (and friends) argument."""
    if "://" in value:
        value = value.split("://", 1)[1]
    return value.split("/", 1)[0]


class _Reader:
    def __init__(self, conf_path: str, cache: Optional[ParseCache], logs: bool = True) -> None:
        self.conf_dir = os.path.dirname(conf_path)
        self.logs = logs
        self.cache = cache
        self.files: List[str] = []
        self.upstreams: List[Upstream] = []
        self.pid: Optional[str] = None
        self.error_logs: List[str] = []
        self.log_formats: List[LogFormatDef] = []
        self.access_logs: List[AccessLog] = []
        self.proxies: List[ProxyPass] = []
        self.modules: List[str] = []

    def include(self, pattern: str, file: str, line: int) -> List[str]:
        full = pattern if os.path.isabs(pattern) else os.path.join(self.conf_dir, pattern)
        if any(c in full for c in _GLOB_CHARS):
            import glob  # only configs with wildcard includes pay for it

            return sorted(glob.glob(full))
        if not os.path.exists(full):
            raise ConfigError(f"include {pattern!r}: no such file", file=file, line=line)
        return [full]

    def read(self, path: str, chain: Tuple[str, ...]) -> List[Item]:
        if path in chain:
            raise ConfigError("include loop", file=path)
        if path not in self.files:
            self.files.append(path)
        return self.flatten(_parse_file(path, self.cache), path, chain + (path,))

    def flatten(self, tree: Tree, file: str, chain: Tuple[str, ...]) -> List[Item]:
        """The statements of one block with its includes expanded in place."""
        items: List[Item] = []
        for stmt in tree:
            if stmt["directive"] == "include" and stmt["args"]:
                for path in self.include(stmt["args"][0], file, stmt["line"]):
                    items.extend(self.read(path, chain))
            else:
                items.append((stmt, file, chain))
        return items

    def walk(self, items: List[Item], context: Tuple[str, ...], logs: Tuple[AccessLog, ...]) -> None:
        # access_log directives of a level replace the inherited ones wherever
        # they stand in the block, so collect them before descending.
        own = [(stmt, file) for stmt, file, _ in items if stmt["directive"] == "access_log" and stmt["args"]] if self.logs else []
        if own and context:
            logs = tuple(
                AccessLog(stmt["args"][0], stmt["args"][1] if len(stmt["args"]) > 1 else "combined", file, stmt["line"])
                for stmt, file in own if stmt["args"][0] != "off"
            )
            self.access_logs.extend(log for log in logs if log not in self.access_logs)
        for stmt, file, chain in items:
            name, args, line = stmt["directive"], stmt["args"], stmt["line"]
            if name == "upstream" and "block" in stmt and args:
                servers = [
                    UpstreamServer(s["args"][0], tuple(s["args"][1:]), f, s["line"])
                    for s, f, _ in self.flatten(stmt["block"], file, chain)
                    if s["directive"] == "server" and s["args"] and "block" not in s
                ]
                kind = context[-1] if context else "main"
                self.upstreams.append(Upstream(args[0], kind, file, line, tuple(servers)))
            elif name == "pid" and not context and args:
                self.pid = args[0]
            elif name == "load_module" and not context and args:
                self.modules.append(args[0])
            elif name == "error_log" and not context and args:
                self.error_logs.append(args[0])
            elif name == "log_format" and args:
                # crossplane leaves \t and friends as written; nginx reads them as escapes.
                formats = tuple(unescape(a) for a in args)
                self.log_formats.append(LogFormatDef(args[0], formats, context[-1] if context else "main", file, line))
            elif name in _PASS_DIRECTIVES and args and context and self.logs:
                self.proxies.append(ProxyPass(_pass_target(args[0]), logs, file, line))
            elif "block" in stmt and (name in _BLOCK_CONTEXTS or context):
                inherited = logs
                if name == "http" and not context:
                    inherited = (AccessLog(None, "combined", None, None),)  # nginx's compiled default log
                elif name == "stream" and not context:
                    inherited = ()
                self.walk(self.flatten(stmt["block"], file, chain), context + (name,), inherited)


def load_config(conf_path: str, cache: Optional[ParseCache] = None, *, background_save: bool = False,
                logs: bool = True, save_cache: bool = True) -> NginxConfig:
    """Parse ``conf_path`` (absolute) and every file it includes.

    With a ``cache``, files unchanged since they were cached are not parsed
    again, and the cache is saved afterwards (in a thread with
    ``background_save``; not at all without ``save_cache``).
    ``logs=False`` leaves out access logs and proxy_pass targets (empty in the
    result), which changing weights does not need.

    Raises:
        ConfigError: a file cannot be read or parsed, or an include is missing.
    """
    if not os.path.isfile(conf_path):
        raise ConfigError("nginx config file not found", file=conf_path)
    reader = _Reader(conf_path, cache, logs)
    reader.walk(reader.read(conf_path, ()), (), ())
    if cache is not None and save_cache:
        cache.save(background=background_save)
    return NginxConfig(
        conf_path=conf_path,
        files=tuple(reader.files),
        upstreams=tuple(reader.upstreams),
        pid=reader.pid,
        error_logs=tuple(reader.error_logs),
        log_formats=tuple(reader.log_formats),
        access_logs=tuple(reader.access_logs),
        proxies=tuple(reader.proxies),
        modules=tuple(reader.modules),
    )


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
