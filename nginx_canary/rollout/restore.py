"""Putting the snapshot taken at start back: rollback, abort, promotion with ``on_success: restore``.

The intent is saved first (the terminal state, ``owed_restore`` and the
``snapshot_id`` still held), then the files are written, then the state
says it is done (``snapshot_id`` None). A restore a BusyError or a crash
left owed is finished by :meth:`Restorer.settle`, from the typed state alone.
Files someone else edited during the run are kept: only the weights go back
(see docs/ROLLOUT-DESIGN.md, "Foreign edits" and "Crash safety").
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Dict, Optional

from nginx_canary.domain import State, percent_text
from nginx_canary.errors import BusyError, CanaryError, StateError
from nginx_canary.rollout.run import Run, changed_files
from nginx_canary.rollout.store import RESTORING_MESSAGE

log = logging.getLogger("nginx_canary.rollout.machine")

VERB = {State.ROLLED_BACK: "rolled back", State.ABORTED: "aborted", State.PROMOTED: "promoted"}


class Restorer:
    """Restores of one rollout's start snapshot."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def restore(self, now: float, final: State, reason: str, event: str) -> Optional[CanaryError]:
        """Put the start snapshot back and end in ``final`` (``failed`` if the restore fails).

        Returns the restore's error, or None. If even the intent cannot be
        saved the restore still runs: nginx comes before bookkeeping.
        """
        run = self.run
        st = run.state
        snapshot_id = st.snapshot_id
        summary = f"{VERB[final]}: {reason}"
        if snapshot_id is None:
            # Only a state file from elsewhere lacks one (see recover): nothing can be put back.
            if final == State.ABORTED:
                st.state = final
                st.message = f"{summary}; no snapshot was recorded, the files are left as they are"
                run.save(now)
                run.record(event, now, level=logging.WARNING, reason=reason, snapshot_id=None)
                return None
            error = CanaryError("the saved state records no snapshot for this run")
            self.failed(now, summary, None, error)
            return error
        try:
            before = run.applier.files_now()
        except CanaryError as exc:
            log.warning("rollout %s: cannot hash the config files before restoring: %s", run.name, exc)
            before = dict(st.expected_files)
        changed = changed_files(st.expected_files, before)
        st.state = final
        st.paused_reason = None
        st.expected_files = before
        st.owed_restore = "weights" if changed else "snapshot"
        st.restore_summary = summary
        st.message = summary + RESTORING_MESSAGE[st.owed_restore]
        try:
            run.save(now)
        except StateError as exc:
            log.error("rollout %s: restoring the snapshot although its intent cannot be saved: %s", run.name, exc)
        run.record(event, now, level=logging.WARNING if final != State.PROMOTED else logging.INFO,
                   reason=reason, snapshot_id=snapshot_id, changed_outside=changed)
        try:
            original: Optional[Dict[str, str]] = run.applier.snapshot_files(snapshot_id)
        except CanaryError:
            original = None  # restore() will say what is wrong with the snapshot
        if original is not None and before == original:
            # Nothing to write (a first step that never took, or files put back by hand).
            self._done(now, snapshot_id, before, written=False, weights_only=False)
            return None
        return self._write(now, snapshot_id)

    def settle(self, now: float) -> None:
        """Finish the restore a terminal state still owes (it holds a ``snapshot_id``)."""
        run = self.run
        st = run.state
        snapshot_id = st.snapshot_id
        assert snapshot_id is not None
        weights_only = st.owed_restore == "weights"
        summary = self._summary()
        try:
            files = run.applier.files_now()
            if weights_only:
                original = run.applier.plan_restore_weights(snapshot_id)
            else:
                original = run.applier.snapshot_files(snapshot_id)
        except CanaryError as exc:
            self.failed(now, summary, snapshot_id, exc)
            return
        what = "restore of the weights" if weights_only else "restore"
        if files == original:
            # Nothing more to write: it had finished (or the files were put back by hand).
            run.record("recovered", now, level=logging.WARNING, outcome=f"{what} had finished")
            self._done(now, snapshot_id, files, written=True, weights_only=weights_only)
        elif files == st.expected_files:
            run.record("recovered", now, level=logging.WARNING, outcome=f"{what} had not happened, restoring")
            self._write(now, snapshot_id)
        else:
            changed = changed_files(st.expected_files, files)
            self.failed(now, summary, snapshot_id, CanaryError(
                f"config files changed outside nginx-canary while the restore was interrupted: {', '.join(changed)}; "
                "nothing overwritten"))

    def failed(self, now: float, summary: str, snapshot_id: Optional[str], exc: CanaryError) -> None:
        """The restore could not be done: ``failed``, waiting for the operator's abort."""
        run = self.run
        st = run.state
        st.state = State.FAILED
        st.owed_restore = None
        st.message = (f"FAILED: {summary}, but restoring snapshot {snapshot_id or '(none)'} failed: {exc}. "
                      f"nginx may still give the canary {percent_text(Fraction(st.canary_percent))} %. "
                      f"Fix the cause, then run `nginx-canary abort {run.name}` to retry the restore")
        run.save(now)
        run.record("restore_failed", now, level=logging.ERROR, snapshot_id=snapshot_id, error=str(exc))

    def _summary(self) -> str:
        st = self.run.state
        return st.restore_summary or VERB[st.state]

    def _write(self, now: float, snapshot_id: str) -> Optional[CanaryError]:
        """``applier.restore`` (or ``restore_weights``) and its outcome: done, still owed (BusyError) or ``failed``."""
        run = self.run
        st = run.state
        kind = st.owed_restore or "snapshot"
        summary = self._summary()
        try:
            if kind == "weights":
                restored = run.applier.restore_weights(snapshot_id)
            else:
                restored = run.applier.restore(snapshot_id)
        except BusyError as exc:
            # Nothing changed; the restore stays owed and the next tick tries again.
            st.message = f"{summary}{RESTORING_MESSAGE[kind]}: {exc}; trying again at the next check"
            run.save(now)
            run.record("busy", now, level=logging.WARNING, target="restore", error=str(exc))
            return exc
        except CanaryError as exc:
            self.failed(now, summary, snapshot_id, exc)
            return exc
        self._done(now, snapshot_id, restored, written=True, weights_only=kind == "weights")
        return None

    def _done(self, now: float, snapshot_id: str, files: Dict[str, str], *, written: bool,
              weights_only: bool) -> None:
        run = self.run
        st = run.state
        summary = self._summary()
        st.expected_files = dict(files)
        st.snapshot_id = None
        st.owed_restore = None
        st.restore_summary = None
        st.canary_percent = "0"
        if weights_only:
            how = "the weights at start restored, the edits made outside nginx-canary kept"
        else:
            how = "original files restored" if written else "the files already held the snapshot"
        st.message = f"{summary}; {how} (snapshot {snapshot_id})"
        run.save(now)
        run.record("restored", run.journal.finished_at(now), snapshot_id=snapshot_id, written=written,
                   weights_only=weights_only, files=sorted(files))
