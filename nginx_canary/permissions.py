"""Who else could write what the daemon trusts: its config, its state, the nginx files it edits.

A daemon running as root that reads a YAML file, or rewrites nginx files, that
another user can write, lets that user steer production traffic (or smuggle
config into nginx). :func:`insecure_paths` finds such files; the daemon
refuses to start on any (``allow_insecure_permissions: true`` turns that into a
warning).

A path is insecure when it, or the directory holding it (which lets files be
replaced), is writable by a user other than root and the daemon's user (owner
with the write bit), a group other than root's and the daemon's (group write
bit), or everyone. A world-writable directory with the sticky bit (``/tmp``)
only lets others replace their own files, so it does not count against the
files in it.
"""

from __future__ import annotations

import os
import stat
from typing import Iterable, List, Optional, Tuple


def _writers(info: os.stat_result, uid: int, gid: int) -> Optional[str]:
    mode = info.st_mode
    if mode & stat.S_IWOTH:
        if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
            return None
        return "everyone"
    if mode & stat.S_IWUSR and info.st_uid not in (0, uid):
        return f"user {info.st_uid}"
    if mode & stat.S_IWGRP and info.st_gid not in (0, gid):
        return f"group {info.st_gid}"
    return None


def insecure_paths(paths: Iterable[str], *, uid: Optional[int] = None,
                   gid: Optional[int] = None) -> List[Tuple[str, str]]:
    """``(path, who can write it)`` for each insecure path or parent directory, in order, without repeats.

    Symlinks are followed (the target is what gets read or written); a path
    that does not exist is skipped (the caller reports missing files).
    """
    uid = os.geteuid() if uid is None else uid
    gid = os.getegid() if gid is None else gid
    found: List[Tuple[str, str]] = []
    seen = set()
    for path in paths:
        real = os.path.realpath(path)
        for candidate in (real, os.path.dirname(real)):
            if candidate in seen:
                continue
            seen.add(candidate)
            try:
                info = os.stat(candidate)
            except OSError:
                continue
            who = _writers(info, uid, gid)
            if who is not None:
                found.append((candidate, who))
    return found
