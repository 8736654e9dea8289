"""systemd's notify protocol, spoken directly on ``$NOTIFY_SOCKET`` (no libsystemd).

A ``Type=notify`` service sends datagrams of ``KEY=value`` lines: ``READY=1``
once it serves, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` at least
every ``WatchdogSec=`` (systemd passes it as ``$WATCHDOG_USEC``), ``RELOADING=1``
and ``STOPPING=1``. Without ``$NOTIFY_SOCKET`` every method does nothing. A
failed send is logged once and never raised: a notification must not stop the
daemon from protecting a rollout.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping, Optional

log = logging.getLogger(__name__)

# A status line is for a terminal; systemd truncates long ones anyway.
MAX_STATUS = 200


class Notifier:
    """Sends notifications to the socket named in ``environ`` (``os.environ`` by default)."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None, pid: Optional[int] = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET") or ""
        self.address: Optional[str] = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]  # abstract namespace
        elif raw.startswith("/"):
            self.address = raw
        self.watchdog_seconds = _watchdog_seconds(env, os.getpid() if pid is None else pid)
        self._sock: Optional[socket.socket] = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines (keyword names upper-cased); True when sent. Never raises."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")
            lines.append(f"{key.upper()}={text}")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify: cannot send to %s: %s", self.address.replace("\0", "@"), exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready="1", status=status[:MAX_STATUS])

    def status(self, status: str) -> bool:
        return self.send(status=status[:MAX_STATUS])

    def watchdog(self) -> bool:
        return self.send(watchdog="1")

    def reloading(self) -> bool:
        return self.send(reloading="1")

    def stopping(self) -> bool:
        return self.send(stopping="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_seconds(env: Mapping[str, str], pid: int) -> Optional[float]:
    """Half of ``$WATCHDOG_USEC`` (systemd's advice), if it is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    target = env.get("WATCHDOG_PID")
    if not usec:
        return None
    try:
        if target and int(target) != pid:
            return None
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
