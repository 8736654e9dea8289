"""The state directory: every path nginx-canary keeps under STATE_DIR, its two locks, and the sweep of leftover temporaries.

Layout (directories 0700, files 0600)::

    lock                               flock held by the one writer of the nginx config (its pid inside)
    daemon.lock                        flock held by the one daemon for its whole life (its pid inside)
    journal.json                       present only while a config change is in flight (crash recovery reads it)
    parse-cache.json                   per-file parses of the nginx config, reused while a file is unchanged
    snapshots/ID/N.orig                the original bytes of each file a config change touched (the last few kept)
    snapshots/ID/manifest.json
    rollout-snapshots/ID/N.orig        a rollout's start snapshot: each of its upstream's files
    rollout-snapshots/ID/manifest.json
    rollouts/NAME.json                 a rollout's current state (:mod:`nginx_canary.rollout.store`)
    rollouts/NAME.history.jsonl        its history, one JSON object per line
    rollouts/NAME.series.jsonl         its run's time series (:mod:`nginx_canary.report.series`)

A rollout NAME is checked against the rollout-name rule
(:func:`nginx_canary.domain.validate_name`: no ``/``, no ``..``) before it
becomes part of a path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Iterable, Iterator, List, Optional, Tuple

from nginx_canary.domain import validate_name
from nginx_canary.errors import BusyError, ControlError, StateError
from nginx_canary.fsutil import fsync_dir, leftover_temps, open_nofollow

DIR_MODE = 0o700
FILE_MODE = 0o600
#: A snapshot's list of files, beside the copies ``N.orig``.
MANIFEST = "manifest.json"
#: ``rollouts/NAME`` + this is a rollout's state; its other files end in ``.jsonl``.
ROLLOUT_STATE_SUFFIX = ".json"


class StateDir:
    """The paths of one state directory, and the operations on it as a whole (creation, locks, temp sweep)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"StateDir({self.root!r})"

    # -- paths -------------------------------------------------------------------

    @property
    def lock(self) -> str:
        return os.path.join(self.root, "lock")

    @property
    def daemon_lock_file(self) -> str:
        return os.path.join(self.root, "daemon.lock")

    @property
    def journal(self) -> str:
        return os.path.join(self.root, "journal.json")

    @property
    def parse_cache(self) -> str:
        return os.path.join(self.root, "parse-cache.json")

    @property
    def snapshots(self) -> str:
        return os.path.join(self.root, "snapshots")

    def snapshot(self, snapshot_id: str) -> str:
        """The directory of a config change's snapshot."""
        return os.path.join(self.snapshots, snapshot_id)

    @property
    def rollout_snapshots(self) -> str:
        return os.path.join(self.root, "rollout-snapshots")

    def rollout_snapshot(self, snapshot_id: str) -> str:
        """The directory of a rollout's start snapshot."""
        return os.path.join(self.rollout_snapshots, snapshot_id)

    @property
    def rollouts(self) -> str:
        return os.path.join(self.root, "rollouts")

    def rollout_state(self, name: str) -> str:
        """Raises BadInputError for an invalid rollout name."""
        return self._rollout_file(name, ROLLOUT_STATE_SUFFIX)

    def history(self, name: str) -> str:
        """Raises BadInputError for an invalid rollout name."""
        return self._rollout_file(name, ".history.jsonl")

    def series(self, name: str) -> str:
        """Raises BadInputError for an invalid rollout name."""
        return self._rollout_file(name, ".series.jsonl")

    def _rollout_file(self, name: str, suffix: str) -> str:
        # The one place a rollout name becomes part of a path: checked first (no "/", no "..").
        return os.path.join(self.rollouts, validate_name(name) + suffix)

    # -- creation ----------------------------------------------------------------

    def ensure(self) -> None:
        """Create the state directory (mode 0700) if needed.

        Raises:
            StateError: it cannot be created or is not a directory.
        """
        try:
            os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)
        except OSError as exc:
            if not isinstance(exc, FileExistsError):
                raise StateError(f"cannot create state dir {self.root}: {exc.strerror} (set --state-dir)") from exc
        if not os.path.isdir(self.root):
            raise StateError(f"state dir {self.root} is not a directory")

    def ensure_rollouts(self) -> None:
        """Create the state directory and its ``rollouts/`` (0700) if needed; a new ``rollouts/`` survives a crash.

        Raises:
            StateError: either cannot be created or is not a directory.
        """
        self.ensure()
        try:
            os.mkdir(self.rollouts, DIR_MODE)
            fsync_dir(self.root)
        except FileExistsError:
            if not os.path.isdir(self.rollouts):
                raise StateError(f"{self.rollouts} is not a directory") from None
        except OSError as exc:
            raise StateError(f"cannot create {self.rollouts}: {exc.strerror or exc} (set --state-dir)") from exc

    # -- locks -------------------------------------------------------------------

    def daemon_lock(self) -> int:
        """Take the one-daemon-per-state-directory lock (``daemon.lock``); return its fd, to close at exit.

        Held for the daemon's whole life, so that a second daemon started by
        mistake never touches the state, the files or nginx before it is refused.

        Raises:
            ControlError: another daemon holds it (its pid in the message).
            StateError: the lock file cannot be opened.
        """
        fd = self._open_lock(self.daemon_lock_file)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ControlError(f"another nginx-canary daemon (pid {holder}) is running on state dir {self.root}") \
                    from exc
            raise StateError(f"cannot lock {self.daemon_lock_file}: {exc.strerror}") from exc
        _write_pid(fd)
        return fd

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the single-writer lock (``lock``) for the duration of the block.

        Raises:
            BusyError: another nginx-canary process holds it.
            StateError: the lock file cannot be opened.
        """
        fd = self._open_lock(self.lock)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise BusyError(f"busy: another nginx-canary (pid {_holder(fd)}) is changing the nginx config; "
                                    "try again") from exc
                raise StateError(f"cannot lock {self.lock}: {exc.strerror}") from exc
            _write_pid(fd)
            yield
        finally:
            os.close(fd)

    def _open_lock(self, path: str) -> int:
        self.ensure()
        try:
            return open_nofollow(path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StateError(f"cannot open lock file {path}: {exc.strerror}") from exc

    # -- leftovers ---------------------------------------------------------------

    def remove_leftover_temps(self, also: Iterable[str] = ()) -> List[Tuple[str, Optional[str]]]:
        """Delete the temporary files of writes a crash cut short: any in the state dir, and those of the files ``also``.

        Call with the writer lock and the daemon lock held: a live writer's
        temporary file looks the same. Returns ``(path, None)`` for each file
        removed, ``(path, reason)`` for each that could not be. Never raises.
        """
        done: List[Tuple[str, Optional[str]]] = []
        for path in leftover_temps(also, [self.root]):
            try:
                os.unlink(path)
            except OSError as exc:
                done.append((path, exc.strerror or str(exc)))
            else:
                done.append((path, None))
        return done


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote into the lock file, or "unknown"."""
    return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
