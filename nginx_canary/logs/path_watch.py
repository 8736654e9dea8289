"""watchdog on a followed log path's directory: wake the reader when the path changes, open new files at once."""

from __future__ import annotations

import os
import threading
from typing import Callable, List, Optional

from watchdog.events import (
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from nginx_canary.logs.logfile import OpenLog, open_log


class _Wakeup(FileSystemEventHandler):
    """Runs on watchdog's thread: sets an Event when our path changes, and opens a file created there.

    Opening at once, rather than at the next ``read_lines()``, is what keeps a
    file that is created and rotated away again between two reads (rotation
    faster than the reader polls) from being missed: the open descriptor
    follows the file wherever it is renamed.
    """

    def __init__(self, path: str, event: threading.Event, opened: Callable[[], None]) -> None:
        super().__init__()
        self._path = path
        self._event = event
        self._opened = opened

    def on_any_event(self, event: FileSystemEvent) -> None:
        created = event.event_type == "created" and os.fsdecode(event.src_path) == self._path
        moved_here = event.event_type == "moved" and os.fsdecode(event.dest_path) == self._path
        if created or moved_here:
            self._opened()
        if os.fsdecode(event.src_path) == self._path or os.fsdecode(event.dest_path) == self._path:
            self._event.set()


class PathWatch:
    """Wakes :meth:`wait` when ``path`` (absolute) changes, and opens each regular file that appears there.

    The files are opened on watchdog's thread and handed over, oldest first,
    by :meth:`take_opened`. Without watchdog (``watch=False``, or inotify
    unavailable, or the directory missing) :meth:`wait` just sleeps, and
    :meth:`close` can still cut that sleep short.
    ``watch_writes=False`` has watchdog report only rotations (create, move,
    delete), not every write to the file.
    """

    def __init__(self, path: str, *, watch: bool, watch_writes: bool) -> None:
        self._path = path
        self._watch_writes = watch_writes
        self._wakeup = threading.Event()
        self._opened: List[OpenLog] = []
        self._lock = threading.Lock()
        self._closed = False
        self._observer: Optional[BaseObserver] = self._start_observer() if watch else None

    @property
    def watching(self) -> bool:
        """Whether watchdog wakes ``wait()`` (else it sleeps its full timeout)."""
        return self._observer is not None

    def wait(self, timeout: float) -> None:
        """Block until the path changes (per watchdog), :meth:`close` is called or ``timeout`` seconds pass."""
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def take_opened(self) -> List[OpenLog]:
        """The files opened as they appeared at the path since the last call, oldest first, read from byte 0."""
        with self._lock:
            opened, self._opened = self._opened, []
        return opened

    def close(self) -> None:
        """Stop watching, wake :meth:`wait` and close the files not taken; safe to call twice."""
        self._closed = True
        self._wakeup.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        with self._lock:
            for log in self._opened:
                os.close(log.fd)
            self._opened.clear()

    def _start_observer(self) -> Optional[BaseObserver]:
        # inotify may be unavailable or out of watches, or the directory may
        # not exist yet: the stat in read_lines() does the job alone then.
        observer = Observer()
        try:
            observer.schedule(
                _Wakeup(self._path, self._wakeup, self._open_early),
                os.path.dirname(self._path),
                recursive=False,
                event_filter=([FileModifiedEvent] if self._watch_writes else [])
                + [FileCreatedEvent, FileMovedEvent, FileDeletedEvent],
            )
            observer.start()
        except OSError:
            return None
        return observer

    def _open_early(self) -> None:
        """On watchdog's thread: open what was just created at the path, for :meth:`take_opened`."""
        try:
            log = open_log(self._path, 0)
        except OSError:
            return  # unreadable, or not a regular file: the stat in read_lines() says what is there
        if log is None:
            return  # gone already
        with self._lock:
            if self._closed:
                os.close(log.fd)
                return
            self._opened.append(log)
