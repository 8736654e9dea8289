"""Change nginx config files as one transaction: snapshot, write, test, reload, verify, or restore.

The journal (``journal.json``) and the snapshots (``snapshots/ID/``) live in
the state directory (:mod:`nginx_canary.statedir`); a transaction runs under
its writer lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import psutil

from nginx_canary import faults
from nginx_canary.errors import CanaryError, NginxNotRunningError, StateError
from nginx_canary.fsutil import atomic_write
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.control import Nginx, ReloadResult
from nginx_canary.nginx.snapshots import CHANGE_IDS, ChangeIds, read_copy, sha256, write_snapshot
from nginx_canary.statedir import StateDir

KEEP_SNAPSHOTS = 20


@dataclass(frozen=True)
class FileChange:
    """New contents for one file of the nginx config; ``old`` is what was read and edited."""

    path: str
    old: bytes
    new: bytes


@dataclass(frozen=True)
class Outcome:
    """What a committed transaction did."""

    snapshot_id: str
    reload: Optional[ReloadResult]


class Transaction:
    """Applies :class:`FileChange` s to a config served by ``nginx``; call inside :meth:`StateDir.writer_lock`."""

    def __init__(self, state_dir: str, nginx: Nginx, clock: Callable[[], float] = time.time,
                 ids: ChangeIds = CHANGE_IDS) -> None:
        self.paths = StateDir(state_dir)
        self.nginx = nginx
        self.clock = clock
        self.ids = ids
        self.journal_path = self.paths.journal

    # -- snapshot and journal -------------------------------------------------

    def _snapshot(self, changes: Sequence[FileChange], about: Optional[Dict[str, Any]] = None) -> Tuple[str, List[dict]]:
        now = self.clock()
        snap_id = self.ids.new(now)

        def entry(n: int, copy: str) -> dict:
            change = changes[n]
            real = os.path.realpath(change.path)
            st = os.stat(real)
            return {
                "path": change.path, "real": real, "copy": copy,
                "old_sha256": sha256(change.old), "new_sha256": sha256(change.new),
                "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid,
            }

        header = {**(about or {}), "id": snap_id, "created": now}
        entries = write_snapshot(self.paths.snapshot(snap_id), [c.old for c in changes], entry, header)
        return snap_id, entries

    def _write_journal(self, snap_id: str, entries: List[dict], phase: str) -> None:
        data = json.dumps({"snapshot": snap_id, "phase": phase, "files": entries}, indent=1).encode()
        atomic_write(self.journal_path, data, mode=0o600)

    def _clear_journal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)

    def _prune_snapshots(self) -> None:
        root = self.paths.snapshots
        with contextlib.suppress(OSError):
            for old in sorted(os.listdir(root))[:-KEEP_SNAPSHOTS]:
                shutil.rmtree(os.path.join(root, old), ignore_errors=True)

    # -- restore ----------------------------------------------------------------

    @staticmethod
    def _restore(entries: List[dict]) -> None:
        for n, entry in enumerate(entries):
            if n:
                faults.point("during_restore")
            original = read_copy(entry["copy"], entry["old_sha256"],
                                 damaged=f"snapshot copy {entry['copy']} is damaged; {entry['real']} left as it is")
            atomic_write(entry["real"], original, mode=entry["mode"], uid=entry["uid"], gid=entry["gid"],
                         purpose="config")

    def recover(self) -> Optional[str]:
        """Finish what a crashed writer left: put back the files of an unfinished change.

        Files still holding what the crashed writer wrote are restored; a file
        someone else changed since is left alone. If the crash came after the
        reload signal, nginx is reloaded onto the restored files.
        Returns a one-line description of what was done, or None when there was nothing to do.

        Raises:
            StateError: the journal or a snapshot copy cannot be read.
            NginxRejectedError: the restored config fails nginx -t or its reload.
        """
        try:
            with open(self.journal_path, "rb") as fh:
                journal = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {self.journal_path}: {exc}") from exc
        entries = journal["files"]
        restored = []
        for entry in entries:
            try:
                with open(entry["real"], "rb") as fh:
                    current = sha256(fh.read())
            except FileNotFoundError:
                current = None
            # Only undo our own write; a file someone else changed since is theirs.
            if current in (entry["new_sha256"], None):
                self._restore([entry])
                restored.append(entry["real"])
        reloaded = ""
        if restored and journal.get("phase") == "reloading":
            # nginx may have taken the interrupted change: put it back on the restored files.
            try:
                config = load_config(self.nginx.conf_path)
                self.nginx.test()
                master = self.nginx.find_master(config)
                self.nginx.reload(master, self.nginx.error_log_path(config))
                reloaded = ", nginx reloaded"
            except NginxNotRunningError:
                reloaded = ", nginx not running"
        self._clear_journal()
        return f"recovered an interrupted change (snapshot {journal['snapshot']}): restored {len(restored)} file(s){reloaded}"

    # -- the transaction ----------------------------------------------------------

    def apply(self, changes: Sequence[FileChange], config: NginxConfig, *, reload: bool,
              about: Optional[Dict[str, Any]] = None) -> Outcome:
        """Write ``changes``, run ``nginx -t``, reload and verify; restore every file on any failure.

        ``about`` goes into the snapshot's manifest (what made the change:
        ``command``, ``upstream``, ``context``, ``detail``), for ``snapshots list``.

        Raises:
            NginxNotRunningError: ``reload`` is asked and no master runs (nothing changed).
            NginxRejectedError: nginx -t failed or the reload did not take effect (files restored).
            StateError: a file changed under us, or a write failed (files restored).
        """
        master = self.nginx.find_master(config) if reload else None
        for change in changes:
            with open(os.path.realpath(change.path), "rb") as fh:
                if fh.read() != change.old:
                    raise StateError(f"{change.path} changed while nginx-canary was editing it; nothing written")
        snap_id, entries = self._snapshot(changes, about)
        self._write_journal(snap_id, entries, "writing")
        reload_result: Optional[ReloadResult] = None
        workers_before: Optional[Tuple[int, ...]] = None
        try:
            for entry, change in zip(entries, changes):
                atomic_write(entry["real"], change.new, mode=entry["mode"], uid=entry["uid"], gid=entry["gid"],
                             purpose="config")
            faults.point("after_write")
            self.nginx.test()
            faults.point("after_test")
            if master is not None:
                self._write_journal(snap_id, entries, "reloading")
                workers_before = self.nginx.workers(master)
                reload_result = self.nginx.reload(master, self.nginx.error_log_path(config))
        except BaseException as exc:
            self._roll_back(entries, master, workers_before, config, exc)
            raise
        faults.point("after_reload")
        self._clear_journal()
        self._prune_snapshots()
        return Outcome(snap_id, reload_result)

    def _roll_back(self, entries: List[dict], master: Optional[psutil.Process], workers_before: Optional[Tuple[int, ...]],
                   config: NginxConfig, cause: BaseException) -> None:
        try:
            self._restore(entries)
            if master is not None and workers_before is not None and master.is_running():
                # New workers mean nginx took the change after all (late, or
                # with an error logged): reload once more onto the restored files.
                if set(self.nginx.workers(master)) - set(workers_before):
                    self.nginx.reload(master, self.nginx.error_log_path(config))
        except CanaryError as exc:
            raise StateError(f"{cause}; and restoring the original files failed: {exc}") from exc
        self._clear_journal()
