"""Checks and clean-up before the daemon touches anything: who can write its files, and temp files a crash left."""

from __future__ import annotations

import logging
import os
from typing import Optional

from nginx_canary.config.model import DaemonSettings
from nginx_canary.daemon.runtime import upstream_files
from nginx_canary.errors import BadInputError
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.reading import Settings as OperationSettings
from nginx_canary.permissions import describe, insecure_paths, insecure_state_dir
from nginx_canary.statedir import StateDir

log = logging.getLogger("nginx_canary.daemon.service")


def check_permissions(settings: DaemonSettings, ops: OperationSettings, config_path: str,
                      config: Optional[NginxConfig] = None) -> None:
    """Refuse to run on files others can write (see :mod:`nginx_canary.permissions`).

    Without ``config``: the daemon's config file, the state dir (and all
    in it) and the nginx binary; with it: nginx's main file, every file it
    includes and every module it loads.

    Raises BadInputError naming the first such file and who can write it,
    unless ``allow_insecure_permissions`` (then each is logged as a warning).
    """
    try:
        if config is None:
            binary = [ops.nginx_bin] if os.path.isabs(ops.nginx_bin) else []  # not in PATH: nginx -t says so
            found = insecure_paths([config_path, *binary]) + insecure_state_dir(ops.state_dir)
        else:
            nginx = ops.nginx()
            found = insecure_paths(list(config.files) + [nginx.full_path(m) for m in config.modules]
                                   + [path for r in settings.rollouts.values()
                                      for path in upstream_files(config, r.upstream)])
    except OSError as exc:
        raise BadInputError(f"refusing to start: cannot tell who can write {exc.filename}: {exc.strerror}") from exc
    if not found:
        return
    if settings.allow_insecure_permissions:
        for path, who in found:
            log.warning("daemon: %s is writable by %s (allowed by allow_insecure_permissions)", path, who)
        return
    raise BadInputError(f"refusing to start: {describe(found)}; whoever can write it can steer nginx, or run code "
                        "as root, through this daemon. Fix the owner, mode or ACL, or set "
                        "allow_insecure_permissions: true")


def remove_leftover_temps(settings: DaemonSettings, state_dir: StateDir, config: NginxConfig) -> None:
    """Delete the temporary files of writes a crash cut short (call with both locks held: no write is under way)."""
    managed = [path for r in settings.rollouts.values() for path in upstream_files(config, r.upstream)]
    for path, error in state_dir.remove_leftover_temps(managed):
        if error:
            log.warning("daemon: cannot remove %s, left by an interrupted write: %s", path, error)
        else:
            log.warning("daemon: removed %s, left by an interrupted write", path)
