"""Each upstream server as it was before nginx-canary's own run of changes to its file.

The transaction keeps a snapshot of every change (``STATE_DIR/snapshots/ID``:
each file's bytes before, and the hashes before and after). Walking them from
the newest back, a file whose bytes are what a change wrote is followed to what
that change found, and so on until the bytes are not the outcome of any kept
change: that is the file as the operator left it. A file someone edited after
nginx-canary's last change is its own origin (their edit is the truth now); the
walk goes back as far as the kept snapshots (``KEEP_SNAPSHOTS`` changes).

The edits of :mod:`nginx_canary.nginx.edit` never add or remove a line break,
so a server's directive starts on the same line in every version of the chain.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from nginx_canary.errors import CanaryError
from nginx_canary.nginx.edit import current_weight, server_statements
from nginx_canary.nginx.model import UpstreamServer
from nginx_canary.nginx.reading import ENCODING
from nginx_canary.nginx.snapshots import read_copy, sha256
from nginx_canary.statedir import MANIFEST, StateDir


@dataclass(frozen=True)
class Origin:
    """A server's weight and ``down`` before nginx-canary changed them, and its directive's text then."""

    weight: int
    down: bool
    #: ``server`` to ``;`` as the operator wrote it; None when that directive cannot be found.
    text: Optional[str]


def _changes_newest_first(state_dir: str) -> List[List[dict]]:
    """The file entries of every kept change snapshot, newest first (unreadable ones skipped)."""
    root = StateDir(state_dir).snapshots
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found: List[Tuple[int, str, List[dict]]] = []
    for name in names:
        path = os.path.join(root, name, MANIFEST)
        try:
            with open(path, "rb") as fh:
                mtime = os.fstat(fh.fileno()).st_mtime_ns
                files = json.load(fh)["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(files, list):
            found.append((mtime, name, [e for e in files if isinstance(e, dict)]))
    # IDs start with the time to the second: they order changes the clock's tick left equal.
    return [files for _, _, files in sorted(found, key=lambda item: item[:2], reverse=True)]


def original_bytes(changes: Sequence[Sequence[dict]], path: str, current: bytes) -> bytes:
    """The bytes ``path`` had before the run of ``changes`` (newest first) that led to ``current``.

    ``current`` itself when no change wrote it. A snapshot copy that cannot be
    read ends the walk there. Raises nothing.
    """
    real = os.path.realpath(path)
    data, digest = current, sha256(current)
    for files in changes:
        for entry in files:
            if entry.get("real") != real or entry.get("new_sha256") != digest:
                continue
            try:
                data = read_copy(entry["copy"], entry["old_sha256"], damaged="damaged")
            except (OSError, KeyError, TypeError, CanaryError):
                return data
            digest = entry["old_sha256"]
            break
    return data


#: ``(path, bytes now) -> bytes before nginx-canary's changes``.
Originals = Callable[[str, bytes], bytes]


def from_snapshots(state_dir: str) -> Originals:
    """The originals the change snapshots of ``state_dir`` lead back to (its manifests read once, on first use)."""
    changes: List[List[dict]] = []
    loaded = False

    def original(path: str, current: bytes) -> bytes:
        nonlocal loaded
        if not loaded:
            changes.extend(_changes_newest_first(state_dir))
            loaded = True
        return original_bytes(changes, path, current)

    return original


def origins(servers: Sequence[UpstreamServer], read: Callable[[str], bytes],
            originals: Optional[Originals] = None) -> Dict[UpstreamServer, Origin]:
    """Each of ``servers`` as it was before nginx-canary changed its file.

    ``read(path)`` gives a file's bytes now; ``originals`` what they were
    before (None: the files as they are are the originals).

    Raises:
        ConfigError: a file cannot be read now or its original cannot be tokenized.
    """
    texts: Dict[str, str] = {}
    out: Dict[UpstreamServer, Origin] = {}
    for server in servers:
        if server.file not in texts:
            now = read(server.file)
            texts[server.file] = (now if originals is None else originals(server.file, now)).decode(*ENCODING)
        text = texts[server.file]
        found = [s for s in server_statements(text, server.file)
                 if s.name.line == server.line and s.args[0].value == server.address]
        if len(found) != 1:
            out[server] = Origin(server.weight, server.down, None)
            continue
        stmt = found[0]
        out[server] = Origin(current_weight(stmt, server.file), any(t.value == "down" for t in stmt.args[1:]),
                             text[stmt.name.start:stmt.end.end])
    return out
