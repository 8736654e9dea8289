"""Commands from the control socket's threads, queued for the daemon's main loop, which alone runs them."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
from typing import Any, Callable, Dict, Tuple

from nginx_canary.daemon.commands import for_rollout
from nginx_canary.errors import CanaryError, ControlError

log = logging.getLogger("nginx_canary.daemon.service")

#: How long a control-socket thread waits for the main loop to run its command.
COMMAND_TIMEOUT = 110.0

#: A command: name, arguments, and the future its thread waits on.
_Queued = Tuple[str, Dict[str, Any], concurrent.futures.Future]


class CommandQueue:
    """Hands commands to the loop and the answers back; ``wake`` rouses the loop (any thread)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._queue: "queue.SimpleQueue[_Queued]" = queue.SimpleQueue()
        self.closed = False

    def empty(self) -> bool:
        return self._queue.empty()

    def submit(self, command: str, args: Dict[str, Any]) -> Any:
        """On a control-socket thread: queue the command and wait for its answer.

        Raises what the command raised, or ControlError when the daemon is
        stopping or the command did not run within COMMAND_TIMEOUT.
        """
        if self.closed:
            raise ControlError("the daemon is stopping")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((command, args, future))
        self._wake()
        try:
            return future.result(timeout=COMMAND_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise ControlError(f"{command!r} did not finish within {COMMAND_TIMEOUT:g} s") from None

    def run(self, execute: Callable[[str, Dict[str, Any]], Any]) -> None:
        """On the loop: run every queued command through ``execute``; every error travels back to its client."""
        while True:
            try:
                command, args, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(execute(command, args))
            except Exception as exc:  # noqa: BLE001 - every error travels back to the client
                if isinstance(exc, CanaryError):
                    # The client gets the message; the log keeps it for whoever reads it later.
                    log.info("daemon: command %s%s: %s", command, for_rollout(args), exc)
                else:
                    log.exception("daemon: command %s failed", command)
                future.set_exception(exc)

    def fail_all(self, reason: str) -> None:
        """Answer every queued command with ControlError(reason)."""
        while True:
            try:
                _, _, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(ControlError(reason))
