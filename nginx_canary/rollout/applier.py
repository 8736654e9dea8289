"""The rollout's hands on nginx: a :class:`nginx_canary.rollout.ports.SplitApplier` over the config engine."""

from __future__ import annotations

import json
import os
import re
import time
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from nginx_canary.errors import BusyError, ConfigError, StateError
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.edit import ServerChange, current_weight, edit_servers, server_statements
from nginx_canary.nginx.origin import Originals, from_snapshots
from nginx_canary.nginx.operations import plan_split
from nginx_canary.nginx.reading import ENCODING, Settings, read_config, read_config_file
from nginx_canary.nginx.snapshots import read_copy, sha256, write_snapshot
from nginx_canary.nginx.transaction import FileChange, Transaction
from nginx_canary.domain import NAME_PATTERN, percent_text, validate_name
from nginx_canary.statedir import MANIFEST, StateDir

_SNAPSHOT_ID = re.compile(NAME_PATTERN + r"-[0-9]{1,16}")


def _read_copy(entry: dict) -> bytes:
    """A rollout snapshot's copy of one file. Raises OSError (unreadable), StateError (damaged)."""
    return read_copy(entry["copy"], entry["sha256"],
                     damaged=f"rollout snapshot copy {entry['copy']} is damaged; nothing restored")


class NginxSplitApplier:
    """Steps one upstream's canary share through plan / transaction, with a start snapshot to go back to.

    Snapshots live in ``STATE_DIR/rollout-snapshots/ID/`` (a manifest of paths
    and hashes plus a copy of each file), apart from the per-change snapshots
    the transaction keeps and prunes.
    """

    def __init__(self, settings: Settings, upstream: str, canary: Sequence[str], *, lock_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 wall_clock: Callable[[], float] = time.time,
                 on_reload: Optional[Callable[[float], None]] = None, context: Optional[str] = None) -> None:
        """``on_reload`` is told how long each verified nginx reload took (seconds), for metrics;
        ``context`` picks the http or stream upstream of that name (see :meth:`NginxConfig.upstream`)."""
        self.settings = settings
        self.context = context
        self.paths = StateDir(settings.state_dir)
        self.upstream = upstream
        self.canary = tuple(canary)
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.on_reload = on_reload

    # -- helpers -------------------------------------------------------------

    def _paths(self, config: NginxConfig) -> List[str]:
        return list(dict.fromkeys(s.file for s in config.upstream(self.upstream, self.context).servers))

    def _hashes(self, paths: Sequence[str]) -> Dict[str, str]:
        return {path: sha256(read_config_file(path)) for path in paths}

    def _manifest(self, snapshot_id: str) -> List[dict]:
        if not isinstance(snapshot_id, str) or _SNAPSHOT_ID.fullmatch(snapshot_id) is None:
            raise StateError(f"invalid rollout snapshot id {snapshot_id!r}")
        path = os.path.join(self.paths.rollout_snapshot(snapshot_id), MANIFEST)
        try:
            with open(path, "rb") as fh:
                return list(json.load(fh)["files"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"rollout snapshot {snapshot_id!r} cannot be read: {exc}", file=path) from exc

    def _run_originals(self) -> Originals:
        """Each file as the run found it: the newest rollout snapshot of this upstream (taken by :meth:`begin`).

        A run's steps are planned against the files at its start (a server ``down`` then stays down; the
        operator's spelling comes back when the split allows), whatever the change snapshots hold after
        crashes and restores. Without a rollout snapshot: the change snapshots' walk (nginx/origin.py).
        """
        newest: Optional[Tuple[int, str]] = None
        try:
            names = os.listdir(self.paths.rollout_snapshots)
        except OSError:
            names = []
        for name in names:
            if _SNAPSHOT_ID.fullmatch(name) is None:
                continue
            stamp = int(name.rsplit("-", 1)[1])
            if newest is not None and stamp <= newest[0]:
                continue
            try:
                with open(os.path.join(self.paths.rollout_snapshot(name), MANIFEST), "rb") as fh:
                    manifest = json.load(fh)
            except (OSError, ValueError):
                continue
            if isinstance(manifest, dict) and manifest.get("upstream") == self.upstream \
                    and manifest.get("context", "http") == (self.context or "http"):
                newest = (stamp, name)
        if newest is None:
            return from_snapshots(self.settings.state_dir)
        found: Dict[str, bytes] = {}
        for entry in self._manifest(newest[1]):
            try:
                found[os.path.realpath(entry["path"])] = _read_copy(entry)
            except (OSError, KeyError, TypeError):
                continue
        return lambda path, now: found.get(os.path.realpath(path), now)

    def _transaction(self, changes: Sequence[FileChange], config: NginxConfig, detail: str) -> None:
        deadline = self.clock() + self.lock_timeout
        while True:
            try:
                with self.paths.writer_lock():
                    transaction = Transaction(self.settings.state_dir, self.settings.nginx())
                    transaction.recover()
                    if changes:
                        about = {"command": "rollout", "upstream": self.upstream, "context": self.context or "http",
                                 "detail": detail}
                        outcome = transaction.apply(changes, config, reload=True, about=about)
                        if self.on_reload is not None and outcome.reload is not None:
                            self.on_reload(outcome.reload.seconds)
                    return
            except BusyError:
                if self.clock() >= deadline:
                    raise
                self.sleep(0.05)

    # -- SplitApplier ----------------------------------------------------------

    def begin(self, rollout_name: str) -> str:
        """Copy the upstream's files into a new rollout snapshot; return its id.

        Raises:
            ConfigError, BadInputError: the config or the upstream cannot be read.
            StateError: the snapshot cannot be written.
        """
        paths = self._paths(read_config(self.settings, logs=False))
        snapshot_id = f"{validate_name(rollout_name)}-{int(self.wall_clock() * 1000)}"
        originals = [read_config_file(path) for path in paths]
        self.paths.ensure()
        write_snapshot(self.paths.rollout_snapshot(snapshot_id), originals,
                       lambda n, copy: {"path": paths[n], "copy": copy, "sha256": sha256(originals[n])},
                       {"id": snapshot_id, "upstream": self.upstream, "context": self.context or "http",
                        "command": "rollout", "detail": f"start of rollout {rollout_name}",
                        "created": self.wall_clock()})
        return snapshot_id

    def plan(self, percent: Fraction) -> Dict[str, str]:
        """The hashes ``apply(percent)`` would leave; writes nothing."""
        config = read_config(self.settings, logs=False)
        hashes = self._hashes(self._paths(config))
        for change in plan_split(config, self.upstream, self.canary, percent, self.context,
                                 originals=self._run_originals()).changes:
            hashes[change.path] = sha256(change.new)
        return hashes

    def apply(self, percent: Fraction) -> Dict[str, str]:
        """Write, test, reload and verify the split (files restored on failure); return the hashes now."""
        config = read_config(self.settings, logs=False)
        plan = plan_split(config, self.upstream, self.canary, percent, self.context,
                          originals=self._run_originals())
        self._transaction(plan.changes, config, f"step: canary {percent_text(percent)} %")
        return self._hashes(self._paths(config))

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        """Put the snapshot's bytes back, test, reload and verify; return the hashes now."""
        entries = self._manifest(snapshot_id)
        config = read_config(self.settings, logs=False)
        changes = []
        for entry in entries:
            original = _read_copy(entry)
            current = read_config_file(entry["path"])
            if current != original:
                changes.append(FileChange(entry["path"], current, original))
        self._transaction(changes, config, f"restore of rollout snapshot {snapshot_id}")
        return self._hashes([entry["path"] for entry in entries])

    def _weight_changes(self, snapshot_id: str) -> Tuple[List[FileChange], NginxConfig, List[str]]:
        """Edits that give the upstream's servers the snapshot's ``weight=`` / ``down``, on the files as they are.

        A server the snapshot does not know (added since) is left as it is.
        Raises StateError (damaged snapshot), ConfigError (a server is ambiguous
        in the snapshot, or a file cannot be edited).
        """
        entries = self._manifest(snapshot_id)
        originals: Dict[str, str] = {}
        for entry in entries:
            originals[entry["path"]] = _read_copy(entry).decode(*ENCODING)
        config = read_config(self.settings, logs=False)
        by_file: Dict[str, List[ServerChange]] = {}
        for server in config.upstream(self.upstream, self.context).servers:
            original = originals.get(server.file)
            if original is None or server.backup:
                continue
            matches = [stmt for stmt in server_statements(original, server.file)
                       if stmt.args[0].value == server.address]
            if not matches:
                continue
            if len(matches) > 1:
                raise ConfigError(f"server {server.address} appears {len(matches)} times in the snapshot of this "
                                  "file: cannot tell which weights to restore", file=server.file)
            down = any(tok.value == "down" for tok in matches[0].args[1:])
            bare = not any(tok.value.startswith("weight=") for tok in matches[0].args[1:])
            by_file.setdefault(server.file, []).append(
                ServerChange(server.line, server.address, current_weight(matches[0], server.file), down, bare))
        changes = []
        for path, server_changes in by_file.items():
            old = read_config_file(path)
            new = edit_servers(old.decode(*ENCODING), server_changes, filename=path).encode(*ENCODING)
            if new != old:
                changes.append(FileChange(path, old, new))
        return changes, config, [entry["path"] for entry in entries]

    def plan_restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        """The hashes :meth:`restore_weights` would leave; writes nothing."""
        changes, _, paths = self._weight_changes(snapshot_id)
        hashes = self._hashes(paths)
        for change in changes:
            hashes[change.path] = sha256(change.new)
        return hashes

    def restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        """Give the servers their snapshot weights, keeping every other byte as it is now; test, reload, verify.

        For files someone else edited during the rollout: their edit stays,
        the traffic split goes back to what it was at start. Returns the hashes now.
        """
        changes, config, paths = self._weight_changes(snapshot_id)
        self._transaction(changes, config, f"start weights of rollout snapshot {snapshot_id}")
        return self._hashes(paths)

    def snapshot_files(self, snapshot_id: str) -> Dict[str, str]:
        """The hashes the snapshot holds."""
        return {entry["path"]: entry["sha256"] for entry in self._manifest(snapshot_id)}

    def hashes_of(self, paths: Sequence[str]) -> Dict[str, str]:
        """The hashes of ``paths`` now, "" for a file that cannot be read; no config parse."""
        hashes = {}
        for path in paths:
            try:
                hashes[path] = sha256(read_config_file(path))
            except ConfigError:
                hashes[path] = ""
        return hashes

    def files_now(self) -> Dict[str, str]:
        """The hashes of the upstream's files on disk now."""
        return self._hashes(self._paths(read_config(self.settings, logs=False)))
