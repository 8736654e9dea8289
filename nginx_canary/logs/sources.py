"""Which log file and which log format: worked out from the nginx config the way nginx does."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, List, Optional

from nginx_canary.errors import BadInputError
from nginx_canary.logs.format import COMBINED, FormatSpec, compile_format, parse_log_format_args, upstream_fields
from nginx_canary.nginx.model import AccessLog, NginxConfig

if TYPE_CHECKING:
    from nginx_canary.nginx.control import Nginx

# access.log.1, access.log.2.gz, access.log-20241128(.gz): what logrotate leaves behind.
_ROTATED_SUFFIX = re.compile(r"(?:\.\d+|-\d{8,10})?(?:\.gz)?\Z")


def named_format(config: Optional[NginxConfig], name: str) -> FormatSpec:
    """The ``log_format`` called ``name`` in the config, or nginx's built-in ``combined``.

    Raises:
        BadInputError: no such format.
    """
    found = config.log_format(name) if config is not None else None
    if found is not None:
        return parse_log_format_args(list(found.args))
    if name == "combined":
        return FormatSpec("combined", COMBINED)
    known = sorted({f.name for f in config.log_formats}) if config is not None else []
    raise BadInputError(f"no log_format named {name!r} in the nginx config (known: {', '.join(['combined'] + known)})")


def access_log_path(nginx: Nginx, log: AccessLog) -> Optional[str]:
    """Where ``log`` writes, as an absolute path (None for syslog, memory or variable paths)."""
    if log.path is None:
        return nginx.full_path(nginx.compiled_defaults().get("http-log-path", "logs/access.log"))
    if log.path.startswith(("syslog:", "memory:")) or "$" in log.path:
        return None
    return nginx.full_path(log.path)


def _base_path(path: str) -> str:
    return _ROTATED_SUFFIX.sub("", os.path.realpath(path))


def format_for_file(config: NginxConfig, nginx: Nginx, logfile: str) -> FormatSpec:
    """The format of the ``access_log`` that writes ``logfile`` (or a rotated copy of it).

    Raises:
        BadInputError: no access_log of the config writes that file.
    """
    wanted = {os.path.realpath(logfile), _base_path(logfile)}
    for log in config.access_logs:
        path = access_log_path(nginx, log)
        if path is not None and os.path.realpath(path) in wanted:
            return named_format(config, log.format)
    raise BadInputError(
        f"no access_log in {config.conf_path} writes {logfile}; name its format with --format NAME or --log-format STRING"
    )


def log_for_upstream(config: NginxConfig, nginx: Nginx, upstream: Optional[str]) -> str:
    """The access log written where ``upstream`` is proxied to (or anywhere, without an upstream)
    whose format has what per-upstream analysis needs; it must be the only such log.

    Raises:
        BadInputError: none, or several to choose from.
    """
    logs: List[AccessLog] = list(config.access_logs_for(upstream) if upstream else config.access_logs)
    usable: List[str] = []
    for log in logs:
        path = access_log_path(nginx, log)
        if path is None or path in usable:
            continue
        try:
            upstream_fields(compile_format(named_format(config, log.format)))
        except BadInputError:
            continue
        usable.append(path)
    where = f"where upstream {upstream!r} is proxied to" if upstream else "in the config"
    if not usable:
        raise BadInputError(
            f"no access log with $upstream_addr is written {where}; add one with the 'canary' log_format "
            "from conf.d/nginx-canary-log-format.conf, or give LOGFILE"
        )
    if len(usable) > 1:
        raise BadInputError(f"several access logs are written {where} ({', '.join(usable)}); give LOGFILE")
    return usable[0]
