"""Read an nginx configuration (main file and every include) into a typed model.

Parsing is crossplane's, one file at a time (``single=True``); includes are
followed here the way nginx resolves them: relative paths against the main
file's directory, globs expanded in sorted order, a glob matching nothing is
fine, a plain path that does not exist is an error. Parsed files can be kept in
a :class:`~nginx_canary.nginx.parse_cache.ParseCache` keyed by inode, size and
mtime, so that a large tree of includes is only re-read where it changed. What
is read becomes the frozen model of :mod:`nginx_canary.nginx.model`.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import crossplane

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.lexer import unescape
from nginx_canary.nginx.lua_block import register_with_crossplane
from nginx_canary.nginx.model import AccessLog, LogFormatDef, NginxConfig, ProxyPass, Upstream
from nginx_canary.nginx.parse_cache import ParseCache, Tree
from nginx_canary.nginx.server_params import upstream_server

register_with_crossplane()  # crossplane's own Lua extension misreads escaped quotes and long brackets

_GLOB_CHARS = "*?["
_BLOCK_CONTEXTS = {"http", "stream", "mail", "events"}
_PASS_DIRECTIVES = {"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass"}
_KEPT_DIRECTIVES = {"include", "server", "pid", "error_log", "log_format", "access_log",
                    "load_module", "hash"} | _PASS_DIRECTIVES


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
        key = ParseCache.key(path)
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
                block = self.flatten(stmt["block"], file, chain)
                servers = [
                    upstream_server(s["args"], f, s["line"])
                    for s, f, _ in block
                    if s["directive"] == "server" and s["args"] and "block" not in s
                ]
                hashes = [tuple(s["args"]) for s, _, _ in block if s["directive"] == "hash" and "block" not in s]
                kind = context[-1] if context else "main"
                self.upstreams.append(Upstream(args[0], kind, file, line, tuple(servers), hashes[-1] if hashes else None))
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
