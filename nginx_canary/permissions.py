"""Who else could write what the daemon trusts: its config, its state, every nginx file.

A process running as root that reads a YAML file, a state directory or an
nginx file another user can write lets that user steer production traffic,
and an nginx file is more: ``load_module`` runs its code as root during
``nginx -t``. :func:`insecure_paths` and :func:`insecure_state_dir` find such
files; the daemon and the CLI refuse to use them (``allow_insecure_permissions:
true`` turns that into a warning).

Trusted writers are root and the running user, and the groups of root (0) and
of the running process. Anyone else who can write a file can change it:

* its owner, whatever the mode (the owner may ``chmod`` it);
* a user or group given write by the mode or by a POSIX ACL
  (``system.posix_acl_access``; the ACL mask limits named entries and the
  owning group);
* for a directory, the same writers, who can replace or add any entry in it.

Every directory a path is looked up through counts, up to ``/``, and both the
directory holding a symlink and the one holding its target. A directory with
the sticky bit (``/tmp``) only lets others replace their own entries, so it
does not count for an entry that exists (whose owner is judged on its own); it
does count for an entry that does not exist yet (anyone could create it first)
and for a directory whose whole content is trusted (the state dir).
"""

from __future__ import annotations

import collections
import errno
import os
import stat
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK = 0x02, 0x04, 0x08, 0x10
_ACL_WRITE = 0x02
_MAX_SYMLINKS = 40  # as the kernel's lookup

Finding = Tuple[str, str]


def acl_writers(data: bytes, owning_gid: int) -> Tuple[List[Tuple[str, int]], bool]:
    """``(("user"|"group", id) that the ACL lets write, whether it has a mask)`` from a raw ACL xattr.

    The format is Linux's ``posix_acl_xattr``: a little-endian u32 version (2),
    then 8-byte entries (u16 tag, u16 permissions, u32 id). Owner and other
    entries are left out: they are the mode bits.

    Raises:
        ValueError: the data is not such an ACL.
    """
    if len(data) < 4 or (len(data) - 4) % 8 or struct.unpack_from("<I", data)[0] != _ACL_VERSION:
        raise ValueError("not a POSIX ACL")
    entries = [struct.unpack_from("<HHI", data, offset) for offset in range(4, len(data), 8)]
    masks = [perm for tag, perm, _ in entries if tag == _ACL_MASK]
    mask = masks[0] if masks else 0o7
    writers: List[Tuple[str, int]] = []
    for tag, perm, ident in entries:
        if not (perm & mask & _ACL_WRITE):
            continue
        if tag == _ACL_USER:
            writers.append(("user", ident))
        elif tag == _ACL_GROUP:
            writers.append(("group", ident))
        elif tag == _ACL_GROUP_OBJ:
            writers.append(("group", owning_gid))
    return writers, bool(masks)


class _Judge:
    """Who besides root and ``uid``/``gid`` can write a path; stat and ACL results cached for one check."""

    def __init__(self, uid: Optional[int], gid: Optional[int]) -> None:
        self.uid = os.geteuid() if uid is None else uid
        self.gid = os.getegid() if gid is None else gid
        self._acls: Dict[str, Optional[bytes]] = {}

    def trusted_owner(self, info: os.stat_result) -> bool:
        return info.st_uid in (0, self.uid)

    def _acl(self, path: str) -> Optional[bytes]:
        if path not in self._acls:
            try:
                self._acls[path] = os.getxattr(path, _ACL_XATTR, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
                    raise
                self._acls[path] = None
        return self._acls[path]

    def writers(self, path: str, info: os.stat_result, *, sticky_protects: bool = False) -> Optional[str]:
        """Who untrusted can write ``path`` (lstat ``info``), or None.

        ``sticky_protects``: ``path`` is a directory looked up for an entry that
        exists, so a sticky bit keeps writers other than the entry's owner off it.
        Raises OSError when the ACL cannot be read.
        """
        if not self.trusted_owner(info):
            return f"user {info.st_uid} (its owner)"
        mode = info.st_mode
        if stat.S_ISLNK(mode) or (sticky_protects and stat.S_ISDIR(mode) and mode & stat.S_ISVTX):
            return None
        acl = self._acl(path)
        named: List[Tuple[str, int]] = []
        masked = False
        if acl is not None:
            try:
                named, masked = acl_writers(acl, info.st_gid)
            except ValueError:
                return "unknown users (an ACL that cannot be read)"
        for kind, ident in named:
            if (kind == "user" and ident not in (0, self.uid)) or (kind == "group" and ident not in (0, self.gid)):
                return f"{kind} {ident} (ACL)"
        # With an ACL mask the group bits of the mode are the mask, not the owning group's permissions.
        if not masked and mode & stat.S_IWGRP and info.st_gid not in (0, self.gid):
            return f"group {info.st_gid}"
        if mode & stat.S_IWOTH:
            return "everyone"
        return None


def _lookups(path: str) -> Tuple[List[Tuple[str, str, Optional[os.stat_result]]], Optional[str]]:
    """Each ``(directory, entry, lstat of entry or None)`` the kernel reads to open ``path``, and the final target.

    Symlinks are followed as the kernel does (relative to their directory);
    the walk stops at the first entry that does not exist (target None).
    """
    steps: List[Tuple[str, str, Optional[os.stat_result]]] = []
    pending = collections.deque(os.path.join(os.getcwd(), path).split("/"))
    current, links = "/", 0
    while pending:
        name = pending.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        entry = os.path.join(current, name)
        try:
            info = os.lstat(entry)
        except OSError:
            steps.append((current, entry, None))
            return steps, None
        steps.append((current, entry, info))
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                return steps, None
            target = os.readlink(entry)
            if target.startswith("/"):
                current = "/"
            pending.extendleft(reversed(target.split("/")))
            continue
        current = entry
    return steps, current


def _check(paths: Iterable[str], judge: _Judge, found: List[Finding], seen: set) -> List[str]:
    """Add what others can write on the way to each path; return the targets that exist."""
    targets = []

    def add(path: str, who: Optional[str]) -> None:
        if who is not None and path not in seen:
            seen.add(path)
            found.append((path, who))

    for path in paths:
        steps, target = _lookups(path)
        for directory, entry, info in steps:
            dir_info = os.lstat(directory)
            # In a sticky directory only an entry's owner may replace it, and an untrusted owner is reported on its own.
            who = judge.writers(directory, dir_info, sticky_protects=info is not None)
            if who is not None and info is None:
                who += f", who could create {entry} first"
            add(directory, who)
            if info is not None and stat.S_ISLNK(info.st_mode):
                add(entry, judge.writers(entry, info))
        if target is not None:
            add(target, judge.writers(target, os.lstat(target)))
            targets.append(target)
    return targets


def insecure_paths(paths: Iterable[str], *, uid: Optional[int] = None,
                   gid: Optional[int] = None) -> List[Finding]:
    """``(path, who can write it)`` for each path, or directory on the way to it, that others can write.

    In order, without repeats. A path that does not exist is judged up to the
    directory that misses it (the caller reports missing files).

    Raises:
        OSError: a file's ACL cannot be read.
    """
    found: List[Finding] = []
    _check(paths, _Judge(uid, gid), found, set())
    return found


def insecure_state_dir(path: str, *, uid: Optional[int] = None, gid: Optional[int] = None) -> List[Finding]:
    """Like :func:`insecure_paths` for a state directory, and everything in it (owner, mode, ACL, symlinks).

    Raises:
        OSError: a file's ACL cannot be read.
    """
    judge = _Judge(uid, gid)
    found: List[Finding] = []
    seen: set = set()
    for target in _check([path], judge, found, seen):
        if not os.path.isdir(target):
            continue
        for root, dirs, files in os.walk(target):
            for name in sorted(dirs + files):
                entry = os.path.join(root, name)
                try:
                    info = os.lstat(entry)
                except FileNotFoundError:
                    continue
                who = judge.writers(entry, info)
                if who is not None and entry not in seen:
                    seen.add(entry)
                    found.append((entry, who))
    return found


def describe(found: Sequence[Finding]) -> str:
    """``PATH is writable by WHO (and N more)`` for the first finding."""
    path, who = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{path} is writable by {who}{more}"
