"""Put a snapshot's files back by hand (``nginx-canary snapshots restore ID``), through the config transaction.

The restore is a config change like any other: under the writer lock, after
recovering an interrupted change, the files that differ from the snapshot get
its bytes back, ``nginx -t`` runs, nginx is reloaded and the reload proven;
on any failure every file is put back as it was before the restore, byte for
byte. The restore itself is snapshotted first, so it can be undone the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.reading import ENCODING, Settings, read_config, read_config_file
from nginx_canary.nginx.snapshots import SnapshotInfo, find_snapshot, read_copy
from nginx_canary.nginx.transaction import FileChange, Outcome, Transaction
from nginx_canary.statedir import StateDir


@dataclass(frozen=True)
class RestorePlan:
    """The files a restore would write (those that differ from the snapshot) and its diff."""

    snapshot: SnapshotInfo
    changes: List[FileChange]
    diff: str


@dataclass(frozen=True)
class RestoreResult:
    """What ``snapshots restore`` did (or would do, on a dry run)."""

    plan: RestorePlan
    outcome: Optional[Outcome] = None
    recovered: Optional[str] = None
    notes: List[str] = field(default_factory=list)


def plan_restore(state_dir: str, snapshot_id: str) -> RestorePlan:
    """Read the snapshot and compare it with the files as they are; write nothing.

    Raises:
        BadInputError: no snapshot has that id.
        StateError: its manifest or a copy cannot be read, or a copy is damaged.
        ConfigError: a file of the snapshot cannot be read now (deleted, say).
    """
    info = find_snapshot(state_dir, snapshot_id)
    changes: List[FileChange] = []
    diff: List[str] = []
    for entry in info.files:
        try:
            original = read_copy(entry.copy, entry.sha256,
                                 damaged=f"snapshot {info.id}: the copy of {entry.path} is damaged; nothing restored")
        except OSError as exc:
            raise ConfigError(f"snapshot {info.id}: cannot read the copy of {entry.path}: {exc.strerror}; "
                              "nothing restored", file=entry.copy) from exc
        current = read_config_file(entry.path)
        if current == original:
            continue
        changes.append(FileChange(entry.path, current, original))
        diff.extend(difflib.unified_diff(current.decode(*ENCODING).splitlines(keepends=True),
                                         original.decode(*ENCODING).splitlines(keepends=True),
                                         fromfile=entry.path, tofile=entry.path))
    return RestorePlan(info, changes, "".join(line if line.endswith("\n") else line + "\n" for line in diff))


def upstreams_in(config: NginxConfig, snapshot: SnapshotInfo) -> Tuple[str, ...]:
    """The upstreams a restore of ``snapshot`` can change: the one it names, and any with a server in its files."""
    files = {entry.path for entry in snapshot.files}
    names = [snapshot.upstream] if snapshot.upstream else []
    names += [u.name for u in config.upstreams if any(s.file in files for s in u.servers)]
    return tuple(dict.fromkeys(names))


def restore_snapshot(settings: Settings, snapshot_id: str, *, dry_run: bool = False,
                     reload: bool = True) -> RestoreResult:
    """Give the snapshot's files its bytes back: write, ``nginx -t``, reload and verify, or restore on failure.

    Raises:
        BadInputError: no snapshot has that id.
        StateError: the snapshot cannot be read or is damaged; a file changed meanwhile.
        ConfigError: the config or a file of the snapshot cannot be read.
        NginxNotRunningError: reload asked and nginx not running (nothing changed).
        NginxRejectedError: nginx rejected the restored files (put back as they were).
        BusyError: another writer holds the lock.
    """
    if dry_run:
        return RestoreResult(plan_restore(settings.state_dir, snapshot_id))
    nginx = settings.nginx()
    with StateDir(settings.state_dir).writer_lock():
        transaction = Transaction(settings.state_dir, nginx)
        recovered = transaction.recover()
        plan = plan_restore(settings.state_dir, snapshot_id)
        config = read_config(settings, logs=False)
        if not plan.changes:
            if reload:
                nginx.find_master(config)
            return RestoreResult(plan, None, recovered, ["the files already hold this snapshot; nothing to change"])
        about = {"command": "snapshots restore", "upstream": plan.snapshot.upstream,
                 "context": plan.snapshot.context, "detail": f"restore of snapshot {plan.snapshot.id}"}
        outcome = transaction.apply(plan.changes, config, reload=reload, about=about)
        return RestoreResult(plan, outcome, recovered)
