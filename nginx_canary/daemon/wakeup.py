"""What wakes the daemon's sleeping loop: a self-pipe written by commands, finished changes, watchdog and signals.

Signal handlers only set flags (and Python writes the signal number to the
pipe through ``signal.set_wakeup_fd``); the loop does the work.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
from typing import Any, Callable, Dict, Optional

log = logging.getLogger("nginx_canary.daemon.service")


class WakePipe:
    """A non-blocking self-pipe and the selector the loop sleeps on."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector: Optional[selectors.BaseSelector] = None

    def wake(self) -> None:
        """Rouse the loop (any thread; safe after close)."""
        try:
            os.write(self.write_fd, b"w")
        except (BlockingIOError, OSError):
            pass  # already awake, or closed during shutdown

    def open_selector(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.read_fd, selectors.EVENT_READ)
        self._selector = selector

    def close_selector(self) -> None:
        selector, self._selector = self._selector, None
        if selector is not None:
            selector.close()

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s or until woken (no sleep before open_selector), then drain the pipe."""
        if self._selector is not None:
            self._selector.select(timeout)
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def install_signals(stop: Callable[[], None], reload: Callable[[], None], wakeup_fd: int) -> Dict[int, Any]:
    """SIGTERM/SIGINT call ``stop``, SIGHUP ``reload`` (both must only set flags); returns what to restore."""
    previous = {}

    def on_stop(signum: int, frame: Any) -> None:
        log.info("daemon: %s received, finishing what is under way", signal.Signals(signum).name)
        stop()

    def on_reload(signum: int, frame: Any) -> None:
        reload()

    for signum, handler in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_reload)):
        previous[signum] = signal.signal(signum, handler)
    previous[-1] = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
    return previous


def restore_signals(previous: Dict[int, Any]) -> None:
    """Put back what :func:`install_signals` replaced."""
    wakeup = previous.pop(-1, -1)
    signal.set_wakeup_fd(wakeup)
    for signum, handler in previous.items():
        signal.signal(signum, handler)
