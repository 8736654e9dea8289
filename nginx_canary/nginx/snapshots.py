"""Snapshots of config files: copies of their original bytes plus a manifest, the checked read back, and the listing.

A snapshot directory (``STATE_DIR/snapshots/ID`` for a config change,
``STATE_DIR/rollout-snapshots/ID`` for a rollout's start, see
:mod:`nginx_canary.statedir`) holds ``N.orig``, the bytes of the N-th file,
and ``manifest.json``, the caller's header plus one entry per file. The
header says what made it (``command``: ``set-weight``, ``rollout``,
``snapshots restore``; ``upstream``, ``context``, ``detail``) and when
(``created``, Unix seconds); snapshots written before those keys existed are
listed with the manifest's mtime and "-" for the rest.

A change's snapshot id is its UTC time to the millisecond and the process
id (``20261203T141812.042-4242``, :class:`ChangeIds`); ids of older
versions, to the second (``20261203T141812-4242``), are still listed, found
and restored, and sort before the new ones of the same second ('-' < '.').
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from nginx_canary.errors import BadInputError, StateError
from nginx_canary.fsutil import atomic_write
from nginx_canary.statedir import DIR_MODE, FILE_MODE, MANIFEST, StateDir

#: A snapshot id as both kinds are named (``20261203T141812.042-4242``, ``20261203T141812-4242`` before, and
#: ``app-1764771492000``): one path component.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: The two kinds: per-change snapshots (kept: the last few) and rollout start snapshots.
KINDS = ("change", "rollout")


class ChangeIds:
    """Ids for change snapshots: ``20261203T141812.042-4242``, UTC time to the millisecond then the process id.

    Unique and increasing within the process (across its threads): an id whose
    time would not be after the last one given gets that time plus a
    millisecond (two changes within one, a clock set back), so the snapshots
    kept, the last by name, are the newest. The process id tells processes apart.
    """

    def __init__(self, pid: Callable[[], int] = os.getpid) -> None:
        self._pid = pid
        self._last: Optional[int] = None
        self._lock = threading.Lock()

    def new(self, now: float) -> str:
        """The id of a snapshot taken at ``now`` (Unix seconds)."""
        millis = int(now * 1000)
        with self._lock:
            if self._last is not None and millis <= self._last:
                millis = self._last + 1
            self._last = millis
        seconds, fraction = divmod(millis, 1000)
        return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(seconds))}.{fraction:03d}-{self._pid()}"


#: The ids of this process's change snapshots (every transaction shares it).
CHANGE_IDS = ChangeIds()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_snapshot(directory: str, originals: Sequence[bytes], entry: Callable[[int, str], Dict[str, Any]],
                   header: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Copy each of ``originals`` to ``directory/N.orig``, then write the manifest; return its entries.

    ``entry(n, copy)`` describes the n-th file (its path, hashes, ...) given
    the path of its copy; the manifest is ``header`` plus ``"files"``, those
    entries in order. Copies and manifest are written atomically and owned by
    this process, whoever owns the originals.

    Raises:
        OSError: the directory cannot be created.
        StateError: a copy or the manifest cannot be written.
    """
    os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
    entries = []
    for n, data in enumerate(originals):
        copy = os.path.join(directory, f"{n}.orig")
        atomic_write(copy, data, mode=FILE_MODE, uid=os.geteuid(), gid=os.getegid(), purpose="snapshot")
        entries.append(entry(n, copy))
    manifest = json.dumps({**header, "files": entries}, indent=1).encode()
    atomic_write(os.path.join(directory, MANIFEST), manifest, mode=FILE_MODE)
    return entries


def read_copy(copy: str, expected_sha256: str, *, damaged: str) -> bytes:
    """The bytes of the snapshot copy ``copy``, checked against the hash the manifest holds.

    Raises:
        OSError: the copy cannot be read.
        StateError: its bytes are not those snapshotted (``damaged`` is the message).
    """
    with open(copy, "rb") as fh:
        data = fh.read()
    if sha256(data) != expected_sha256:
        raise StateError(damaged)
    return data


@dataclass(frozen=True)
class SnapshotFile:
    """One file of a snapshot: where it lives, the copy of its bytes and their hash."""

    path: str
    copy: str
    sha256: str


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot's manifest says; ``kind`` is ``change`` or ``rollout`` (a rollout's start)."""

    id: str
    kind: str
    created: float
    files: Tuple[SnapshotFile, ...]
    command: Optional[str] = None
    upstream: Optional[str] = None
    context: Optional[str] = None
    detail: Optional[str] = None


def _directories(paths: StateDir) -> Dict[str, str]:
    return {"change": paths.snapshots, "rollout": paths.rollout_snapshots}


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def read_snapshot(directory: str, kind: str) -> SnapshotInfo:
    """The manifest of the snapshot in ``directory``.

    Raises:
        StateError: the manifest cannot be read or is not a snapshot's.
    """
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as fh:
            manifest = json.load(fh)
        created = manifest.get("created")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            created = os.stat(path).st_mtime
        files = tuple(
            # A change's manifest calls the hash of the original old_sha256, a rollout's sha256.
            SnapshotFile(str(e["path"]), str(e["copy"]), str(e.get("old_sha256") or e["sha256"]))
            for e in manifest["files"]
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"snapshot manifest cannot be read: {exc}", file=path) from exc
    return SnapshotInfo(os.path.basename(directory), kind, float(created), files, _text(manifest.get("command")),
                        _text(manifest.get("upstream")), _text(manifest.get("context")), _text(manifest.get("detail")))


def list_snapshots(state_dir: str) -> Tuple[List[SnapshotInfo], List[str]]:
    """Every snapshot of the state dir, oldest first, and one line per snapshot that cannot be read.

    Raises nothing: a state dir without snapshots gives two empty lists.
    """
    found: List[SnapshotInfo] = []
    problems: List[str] = []
    for kind, root in _directories(StateDir(state_dir)).items():
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue
        for name in names:
            if _ID.fullmatch(name) is None or not os.path.isdir(os.path.join(root, name)):
                continue
            try:
                found.append(read_snapshot(os.path.join(root, name), kind))
            except StateError as exc:
                problems.append(str(exc))
    found.sort(key=lambda info: (info.created, info.id))
    return found, problems


def find_snapshot(state_dir: str, snapshot_id: str) -> SnapshotInfo:
    """The snapshot called ``snapshot_id``, of either kind.

    Raises:
        BadInputError: the id is not a snapshot id, or no snapshot has it, or both kinds have it.
        StateError: its manifest cannot be read.
    """
    if not isinstance(snapshot_id, str) or _ID.fullmatch(snapshot_id) is None:
        raise BadInputError(f"{snapshot_id!r} is not a snapshot id (`nginx-canary snapshots list` shows them)")
    found = [(kind, os.path.join(root, snapshot_id)) for kind, root in _directories(StateDir(state_dir)).items()
             if os.path.isdir(os.path.join(root, snapshot_id))]
    if not found:
        raise BadInputError(f"no snapshot {snapshot_id!r} in {state_dir} (`nginx-canary snapshots list` shows them)")
    if len(found) > 1:
        raise BadInputError(f"snapshot id {snapshot_id!r} names both a change's and a rollout's snapshot; "
                            f"restore by hand from {found[0][1]} or {found[1][1]}")
    kind, directory = found[0]
    return read_snapshot(directory, kind)
