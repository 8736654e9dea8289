"""Where nginx and nginx-canary's state live, and reading nginx's config through the parse cache.

Kept apart from :mod:`nginx_canary.nginx.operations` (planning and writing
changes) so that the commands that only read (``analyze``, ``upstreams``)
do not load the machinery of edits, transactions and process control.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.parse_cache import ParseCache
from nginx_canary.statedir import StateDir

if TYPE_CHECKING:
    from nginx_canary.nginx.control import Nginx

# Config bytes that are not UTF-8 survive an edit unchanged.
ENCODING = ("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Settings:
    """Where nginx and nginx-canary's own state live."""

    nginx_conf: str
    nginx_bin: str
    nginx_prefix: Optional[str]
    state_dir: str

    def nginx(self) -> Nginx:
        """The nginx these settings name (its binary, main config and prefix)."""
        from nginx_canary.nginx.control import Nginx

        return Nginx(binary=self.nginx_bin, conf_path=self.nginx_conf, prefix=self.nginx_prefix)


def read_config(settings: Settings, *, logs: bool = True, save_cache: bool = True) -> NginxConfig:
    """Parse the nginx config, reusing cached per-file parses when the state dir exists.

    ``logs=False`` skips access logs and proxy targets, which weight changes do not need.
    ``save_cache=False`` writes nothing (the daemon, before it has checked who can write the files).

    Raises:
        ConfigError: the config cannot be read or parsed.
    """
    cache = None
    if os.path.isdir(settings.state_dir) and os.access(settings.state_dir, os.W_OK):
        cache = ParseCache(StateDir(settings.state_dir).parse_cache)
    return load_config(settings.nginx_conf, cache, background_save=True, logs=logs, save_cache=save_cache)


def read_config_file(path: str) -> bytes:
    """The bytes of a managed config file, read through its symlinks. Raises ConfigError (cannot read)."""
    try:
        with open(os.path.realpath(path), "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from exc
