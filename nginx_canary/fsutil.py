"""Crash-safe file writes."""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import stat
import tempfile
from typing import Iterable, List, Optional

from nginx_canary import faults
from nginx_canary.errors import StateError

_TAIL_CHUNK = 1 << 16
#: atomic_write's temporary file for PATH is ``.BASENAME.RANDOM`` + this, next to PATH.
TEMP_SUFFIX = ".nginx-canary.tmp"


def fsync_dir(path: str) -> None:
    """Make a rename in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, mode: Optional[int] = None, uid: Optional[int] = None,
                 gid: Optional[int] = None, purpose: str = "state") -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix.

    A temporary file in the same directory is written, fsynced, given the mode
    and owner asked for (by default those of the file it replaces), renamed over
    ``path``, and the directory is fsynced. ``purpose`` (config, state,
    snapshot) names the fault point ``write_PURPOSE`` of :mod:`nginx_canary.faults`.

    Raises:
        StateError: any step fails (the original file is then untouched).
    """
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(path)
        mode = st.st_mode & 0o7777 if mode is None else mode
        uid = st.st_uid if uid is None else uid
        gid = st.st_gid if gid is None else gid
    except FileNotFoundError:
        pass
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            faults.point("write_" + purpose)  # a full or failing disk, half-way through
            fh.write(data[half:])
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            if uid is not None and gid is not None:
                tmp_st = os.fstat(fh.fileno())
                if (tmp_st.st_uid, tmp_st.st_gid) != (uid, gid):
                    os.fchown(fh.fileno(), uid, gid)
            os.fsync(fh.fileno())
        os.rename(tmp, path)
        tmp = None
        fsync_dir(directory)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        discard(tmp)


def discard(tmp: Optional[str]) -> None:
    """Remove the temporary file ``tmp`` of a write that did not reach its rename (None: nothing to do). Never raises."""
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` for a file of the state directory: never through a symlink, and only a regular file.

    A file that must be new is created with ``os.O_EXCL`` in ``flags`` (or
    :func:`atomic_write`'s ``mkstemp``); one that lives on (a lock, a history)
    is opened with ``O_NOFOLLOW``, so a planted symlink fails (ELOOP) instead
    of making root write where it points.

    Raises:
        OSError: it cannot be opened, is a symlink, or is not a regular file.
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def cut_torn_tail(fd: int, size: int) -> None:
    """Truncate an append-only file of lines after its last newline if it does not end with one.

    A crash during an append can leave a partial last line; cutting it
    before the next append keeps that line from swallowing the next record.
    ``size`` is the file's current size. Raises OSError.
    """
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def append_lines(path: str, data: bytes, *, what: str, sync: bool, create: bool = True,
                 fault: Optional[str] = None) -> bool:
    """Append ``data`` (whole lines, each ending with a newline) to the line file ``path`` in one write.

    The file is opened with ``O_APPEND`` (never through a symlink) and
    flocked, so that the repair of a torn tail (a partial last line that a
    crash left, see :func:`cut_torn_tail`) never cuts another writer's line.
    ``sync`` fsyncs the file, and its directory when the append created it
    (``mode`` 0600); without it the bytes reach the disk when the kernel
    writes them. With ``create=False`` a missing file is left missing and
    False is returned. ``fault`` names a :mod:`nginx_canary.faults` point
    just before the write. ``what`` names the file in messages ("history").

    Raises:
        StateError: the file cannot be opened, appended to or synced.
    """
    flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
    try:
        fd = open_nofollow(path, flags, 0o600)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not create:
            return False
        raise StateError(f"cannot open {what}: {exc.strerror or exc}", file=path) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        cut_torn_tail(fd, size)
        if fault is not None:
            faults.point(fault)
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except OSError as exc:
        raise StateError(f"cannot append to {what}: {exc.strerror or exc}", file=path) from exc
    finally:
        os.close(fd)
    if sync and size == 0:
        directory = os.path.dirname(path) or "."
        try:
            fsync_dir(directory)
        except OSError as exc:
            raise StateError(f"cannot sync {directory}: {exc.strerror or exc}") from exc
    return True


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written. Raises OSError."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def leftover_temps(paths: Iterable[str], directories: Iterable[str] = ()) -> List[str]:
    """Temporary files of :func:`atomic_write` that a killed writer left: those for ``paths``, and any in ``directories``.

    Only call it while no write can be under way (the writer lock and the
    daemon lock held): a live writer's temporary file looks the same.
    """
    found = set()
    for path in paths:
        pattern = os.path.join(glob.escape(os.path.dirname(path) or "."),
                               "." + glob.escape(os.path.basename(path)) + ".*" + TEMP_SUFFIX)
        found.update(glob.glob(pattern))
    for directory in directories:
        for root, _, names in os.walk(directory):
            found.update(os.path.join(root, n) for n in names if n.startswith(".") and n.endswith(TEMP_SUFFIX))
    return sorted(p for p in found if os.path.isfile(p) and not os.path.islink(p))
