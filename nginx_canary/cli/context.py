"""What the CLI's global options resolve to: command line, then environment, then the daemon's YAML, then defaults.

The daemon's config file is read only when a command needs a value from it,
and only when it exists: an operator who never wrote one (``set-weight`` on
its own) is not asked for one. A config named with ``--config`` or
``$NGINX_CANARY_CONFIG`` must be readable; the default one is skipped when it
is missing or not readable by the user running the command (a member of the
control group talking to the daemon need not read the daemon's config).

The state dir is checked when the settings are first resolved, before any
command reads it (the parse cache, the journal, rollout state): one that
others can write is refused (:mod:`nginx_canary.permissions`).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional

from nginx_canary.nginx.reading import Settings
from nginx_canary.nginx.paths import main_conf_path
from nginx_canary.permissions import Finding, describe, insecure_state_dir

if TYPE_CHECKING:
    from nginx_canary.config.model import DaemonSettings

# Kept equal to settings.DEFAULT_CONFIG_PATH (a test checks); importing settings would load PyYAML on every command.
DEFAULT_CONFIG_PATH = "/etc/nginx-canary/config.yaml"
DEFAULT_SOCKET = "/run/nginx-canary/control.sock"
DEFAULT_NGINX_CONF = "/etc/nginx/nginx.conf"
DEFAULT_NGINX_BIN = "nginx"
DEFAULT_STATE_DIR = "/var/lib/nginx-canary"


@dataclass
class CliContext:
    """The global options as given (None: not given); values resolved on first use."""

    config_file: Optional[str] = None
    socket_path: Optional[str] = None
    nginx_conf: Optional[str] = None
    nginx_bin: Optional[str] = None
    nginx_prefix: Optional[str] = None
    state_dir: Optional[str] = None
    default_config_path: str = DEFAULT_CONFIG_PATH
    can_read: Callable[[str], bool] = field(default=lambda path: os.access(path, os.R_OK), repr=False)
    #: Who else can write the state dir or anything in it (see :mod:`nginx_canary.permissions`).
    state_dir_writers: Callable[[str], List[Finding]] = field(default=insecure_state_dir, repr=False)
    warn: Callable[[str], None] = field(default=lambda text: print(f"nginx-canary: {text}", file=sys.stderr), repr=False)
    _daemon: Optional["DaemonSettings"] = field(default=None, repr=False)
    _daemon_read: bool = field(default=False, repr=False)
    _settings: Optional[Settings] = field(default=None, repr=False)

    @property
    def config_path(self) -> str:
        """The daemon config file: ``--config`` / ``$NGINX_CANARY_CONFIG``, else the default path.

        Raises SettingsError for an empty ``--config``.
        """
        if self.config_file is None:
            return self.default_config_path
        if not self.config_file:
            from nginx_canary.errors import SettingsError

            raise SettingsError("--config must not be empty")
        return self.config_file

    def daemon_settings(self, *, required: bool = False) -> Optional["DaemonSettings"]:
        """The daemon's config, or None when the default file is absent or unreadable and ``required`` is false.

        Raises SettingsError: the file is invalid, or it was named explicitly
        (or is ``required``) and cannot be read.
        """
        if self._daemon_read and (self._daemon is not None or not required):
            return self._daemon
        path = self.config_path
        explicit = self.config_file is not None
        if not (explicit or required) and not self.can_read(path):
            self._daemon_read = True
            return None
        from nginx_canary.config.settings import load_settings

        self._daemon = load_settings(path)
        self._daemon_read = True
        return self._daemon

    @property
    def settings(self) -> Settings:
        """nginx and state directory for the config engine. Raises SettingsError (see :meth:`daemon_settings`)."""
        if self._settings is None:
            needs_config = None in (self.nginx_conf, self.nginx_bin, self.state_dir) or (
                self.nginx_prefix is None and self.nginx_conf is None)
            daemon = self.daemon_settings() if needs_config else None
            binary = self.nginx_bin or (daemon.nginx.binary if daemon else DEFAULT_NGINX_BIN)
            # A prefix belongs to the nginx of the config file: take the daemon's only with its conf.
            prefix = self.nginx_prefix
            if prefix is None and self.nginx_conf is None and daemon is not None:
                prefix = daemon.nginx.prefix
            if self.nginx_conf:
                # As nginx -p PREFIX -c CONF: a relative CONF is under the prefix.
                conf = main_conf_path(self.nginx_conf, prefix)
            elif daemon is not None:
                conf = main_conf_path(daemon.nginx.conf, daemon.nginx.prefix)
            else:
                conf = DEFAULT_NGINX_CONF
            state_dir = self.state_dir or (daemon.state_dir if daemon else DEFAULT_STATE_DIR)
            settings = Settings(
                nginx_conf=conf,
                nginx_bin=shutil.which(binary) or binary,
                nginx_prefix=os.path.abspath(prefix) if prefix else None,
                state_dir=os.path.abspath(state_dir),
            )
            self._check_state_dir(settings.state_dir)
            self._settings = settings
        return self._settings

    def _check_state_dir(self, path: str) -> None:
        """Refuse a state dir that others can write, before anything in it is read.

        The daemon's ``allow_insecure_permissions`` turns the refusal into a warning.

        Raises:
            BadInputError: someone other than root and the running user can write it.
            SettingsError: the daemon's config had to be read for that setting and is invalid.
        """
        from nginx_canary.errors import BadInputError

        try:
            found = self.state_dir_writers(path)
        except OSError as exc:
            raise BadInputError(f"refusing to use state dir {path}: cannot tell who can write "
                                f"{exc.filename}: {exc.strerror}") from exc
        if not found:
            return
        daemon = self.daemon_settings()
        if daemon is not None and daemon.allow_insecure_permissions:
            for where, who in found:
                self.warn(f"{where} is writable by {who} (allowed by allow_insecure_permissions)")
            return
        raise BadInputError(f"refusing to use state dir {path}: {describe(found)}; whoever can write it can change "
                            "what nginx-canary does as this user. The state dir and every directory above it must "
                            "belong to root or you and be writable by no one else (install -d -m 0700 DIR makes "
                            "one); or set allow_insecure_permissions: true in the daemon's config")

    @property
    def socket(self) -> str:
        """The control socket: ``--socket``, else the config's ``control_socket``, else the default."""
        if self.socket_path:
            return self.socket_path
        daemon = self.daemon_settings()
        return daemon.control_socket if daemon is not None else DEFAULT_SOCKET
