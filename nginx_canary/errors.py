"""The one error hierarchy of nginx-canary.

Every layer converts foreign exceptions into one of these at its boundary; the
CLI prints ``str(exc)`` as a single line and exits with ``exc.exit_code``.
"""

from __future__ import annotations

import enum
from typing import Optional


class ExitCode(enum.IntEnum):
    """Process exit codes, documented in ``--help`` and the README."""

    OK = 0
    NGINX_REJECTED = 1
    BAD_INPUT = 2
    NGINX_NOT_RUNNING = 3  # also: the nginx-canary daemon is not running
    BUSY = 4


class CanaryError(Exception):
    """Root of every error nginx-canary raises on purpose."""

    exit_code: ExitCode = ExitCode.NGINX_REJECTED

    def __init__(self, message: str, *, file: Optional[str] = None, line: Optional[int] = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(message)

    def __str__(self) -> str:
        if self.file is not None:
            where = f"{self.file}:{self.line}" if self.line is not None else self.file
            return f"{where}: {self.message}"
        return self.message


class BadInputError(CanaryError):
    """Something the user typed (an argument, an option) is not acceptable."""

    exit_code = ExitCode.BAD_INPUT


class ConfigError(CanaryError):
    """The nginx configuration cannot be read or does not fit the request."""

    exit_code = ExitCode.NGINX_REJECTED


class EditError(ConfigError):
    """A server directive cannot be located or edited safely in its file."""


class NginxRejectedError(CanaryError):
    """``nginx -t`` failed or a reload did not take effect (files restored)."""

    exit_code = ExitCode.NGINX_REJECTED


class NginxNotRunningError(CanaryError):
    """No running nginx master matches the configuration."""

    exit_code = ExitCode.NGINX_NOT_RUNNING


class BusyError(CanaryError):
    """Another writer holds the lock."""

    exit_code = ExitCode.BUSY


class StateError(CanaryError):
    """The state directory cannot be read or written."""

    exit_code = ExitCode.NGINX_REJECTED


class LogFormatError(BadInputError):
    """A log format cannot be compiled or lacks the variables the analysis needs."""


class LogReadError(BadInputError):
    """A log file exists but cannot be opened or read."""


class SettingsError(BadInputError):
    """The daemon's YAML configuration cannot be read or is invalid.

    The message is one line naming the file, the line and the key path:
    ``config.yaml:14: rollouts.app.analysis.interval: expected a duration ...``.
    """

    def __init__(self, message: str, *, file: Optional[str] = None, line: Optional[int] = None,
                 key: Optional[str] = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message, file=file, line=line)


class DaemonNotRunningError(CanaryError):
    """No nginx-canary daemon answers on the control socket (exit 3, like nginx not running)."""

    exit_code = ExitCode.NGINX_NOT_RUNNING


class UnknownRolloutError(BadInputError):
    """A rollout name that the daemon's config does not define."""


class ControlError(CanaryError):
    """The control socket cannot be set up, or a peer broke the protocol."""


class FleetError(CanaryError):
    """The fleet's etcd cannot be reached in time, refused a request, or answered nonsense.

    Exit 3, like a daemon or nginx that does not answer: the service the command
    needs is not there right now, and trying again later may work.
    """

    exit_code = ExitCode.NGINX_NOT_RUNNING
