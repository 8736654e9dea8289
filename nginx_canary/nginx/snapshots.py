"""Snapshots of config files: copies of their original bytes plus a manifest, and the checked read back.

A snapshot directory (``STATE_DIR/snapshots/ID`` for a config change,
``STATE_DIR/rollout-snapshots/ID`` for a rollout's start, see
:mod:`nginx_canary.statedir`) holds ``N.orig``, the bytes of the N-th file,
and ``manifest.json``, the caller's header plus one entry per file.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Sequence

from nginx_canary.errors import StateError
from nginx_canary.fsutil import atomic_write
from nginx_canary.statedir import DIR_MODE, FILE_MODE, MANIFEST


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
