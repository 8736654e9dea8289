"""Notice at once when someone edits the nginx files a rollout manages (watchdog on their directories).

A rollout hashes its files at every check anyway (``Rollout.check_drift``),
so this is an accelerator: an edit made between two checks pauses the
rollout as soon as watchdog reports it. When watchdog cannot watch (inotify
out of watches, a directory that vanished) or misses an event, the edit is
still found at the next check.

The rollout's own writes are reported too; the drift check that follows
finds the files as the rollout wrote them and does nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Iterable, Optional

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

_EVENTS = [FileModifiedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent]


class _Handler(FileSystemEventHandler):
    """On watchdog's thread: flag and wake when an event touches one of the paths."""

    def __init__(self, watcher: "ConfigWatcher") -> None:
        super().__init__()
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {os.fsdecode(event.src_path)}
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.add(os.fsdecode(dest))
        if paths & self._watcher.paths:
            self._watcher.notice()


class ConfigWatcher:
    """Watches ``paths`` (files); :meth:`take` says whether any was touched since the last call.

    ``wake`` is called on watchdog's thread after each such event (the
    daemon's loop wakes up). Thread-safe: watchdog's thread sets, the loop takes.
    """

    def __init__(self, paths: Iterable[str], wake: Callable[[], None]) -> None:
        self.paths = frozenset(os.path.abspath(p) for p in paths)
        self._wake = wake
        self._changed = threading.Event()
        self._observer: Optional[BaseObserver] = None

    @property
    def watching(self) -> bool:
        return self._observer is not None

    def start(self) -> bool:
        """Start watching the paths' directories; False (logged) when watchdog cannot."""
        if self._observer is not None or not self.paths:
            return self._observer is not None
        observer = Observer()
        handler = _Handler(self)
        try:
            for directory in sorted({os.path.dirname(p) for p in self.paths}):
                observer.schedule(handler, directory, recursive=False, event_filter=_EVENTS)
            observer.start()
        except OSError as exc:
            log.warning("cannot watch the config files for edits (%s); they are still checked at every check", exc)
            return False
        self._observer = observer
        return True

    def notice(self) -> None:
        """One of the paths was touched (called on watchdog's thread, or by a test)."""
        self._changed.set()
        self._wake()

    def take(self) -> bool:
        """True when a path was touched since the last call (and clear that)."""
        if not self._changed.is_set():
            return False
        self._changed.clear()
        return True

    def close(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(5.0)
