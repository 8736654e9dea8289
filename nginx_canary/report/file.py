"""Writing the HTML report to disk without following a planted symlink or overwriting someone else's file.

``nginx-canary report`` is often run as root, in a shared directory such as
``/tmp``, and its default file name is predictable (the rollout's name and the
second). So a name it picks itself is created with ``O_CREAT | O_EXCL |
O_NOFOLLOW``: a file or symlink already there (even a dangling one) is never
opened, and the next free name (``...-2.html``, ``...-3.html``) is taken
instead. A name the user gave with ``--output`` replaces an existing regular
file atomically (a temporary file created with ``O_EXCL`` in the same
directory, renamed over it: a rename never follows a link); a symlink or
anything but a regular file at that name is refused.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from typing import Optional

from nginx_canary.errors import BadInputError, CanaryError
from nginx_canary.fsutil import discard, write_all

#: Other names tried after the default one: NAME-2.html .. NAME-100.html.
MAX_TRIES = 100
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_report_file(page: str, path: str, *, chosen_by_user: bool) -> str:
    """Write ``page`` (UTF-8) to ``path`` and return the path written, which may differ from ``path``.

    ``chosen_by_user`` False (the default name): created exclusively, or
    under the next free name ``STEM-N.SUFFIX``. True (``--output``): created
    exclusively, or an existing regular file replaced atomically keeping its
    mode.

    Raises:
        BadInputError: ``--output`` names a symlink or something other than a regular file.
        CanaryError: the file cannot be written, or no free default name is left.
    """
    data = page.encode("utf-8")
    if chosen_by_user:
        return _write_chosen(data, path)
    stem, suffix = os.path.splitext(path)
    for n in range(1, MAX_TRIES + 1):
        candidate = path if n == 1 else f"{stem}-{n}{suffix}"
        try:
            fd = os.open(candidate, _CREATE, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CanaryError(f"cannot write the report to {candidate}: {_why(exc)}") from None
        _write_fd(fd, data, candidate)
        return candidate
    raise CanaryError(f"cannot write the report: {path} and {MAX_TRIES - 1} numbered names after it exist "
                      "(give --output)")


def _write_chosen(data: bytes, path: str) -> str:
    try:
        fd = os.open(path, _CREATE, 0o666)
    except FileExistsError:
        return _replace(data, path)
    except OSError as exc:
        raise CanaryError(f"cannot write the report to {path}: {_why(exc)}") from None
    _write_fd(fd, data, path)
    return path


def _replace(data: bytes, path: str) -> str:
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise CanaryError(f"cannot write the report to {path}: {_why(exc)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadInputError(f"{path} is a symbolic link: the report is not written through one "
                            "(remove it or give another --output)")
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{path} exists and is not a regular file (give another --output)")
    directory = os.path.dirname(path) or "."
    tmp: Optional[str] = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        _write_fd(fd, data, path)
        os.rename(tmp, path)
        tmp = None
    except OSError as exc:
        raise CanaryError(f"cannot write the report to {path}: {_why(exc)}") from None
    finally:
        discard(tmp)
    return path


def _write_fd(fd: int, data: bytes, path: str) -> None:
    try:
        write_all(fd, data)
    except OSError as exc:
        raise CanaryError(f"cannot write the report to {path}: {_why(exc)}") from None
    finally:
        os.close(fd)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link is in the way (not followed)"
    return exc.strerror or str(exc)
