"""What the parts of one rollout's state machine share: its settings, its state, the applier and the journal.

The state machine (machine.py), step changes (stepping.py), restores
(restore.py) and recovery (recovery.py) each act on one :class:`Run`. A
part may replace ``run.state`` (a failed step change falls back to the state
before it), so every part reads it from here, never keeps its own reference.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from nginx_canary.config.model import RolloutSettings
from nginx_canary.domain import State
from nginx_canary.errors import CanaryError
from nginx_canary.rollout.journal import Journal
from nginx_canary.rollout.ports import SplitApplier
from nginx_canary.rollout.store import RolloutState


def changed_files(expected: Dict[str, str], actual: Dict[str, str]) -> List[str]:
    """The paths whose hashes differ between two ``path -> sha256`` maps, sorted."""
    return sorted(p for p in set(expected) | set(actual) if expected.get(p) != actual.get(p))


def copy_state(state: RolloutState) -> RolloutState:
    """An independent copy (to fall back to)."""
    return RolloutState.from_dict(state.to_dict())


class Run:
    """One rollout's shared parts; ``state`` is the current :class:`RolloutState`."""

    def __init__(self, settings: RolloutSettings, state: RolloutState, applier: SplitApplier,
                 journal: Journal) -> None:
        self.settings = settings
        self.state = state
        self.applier = applier
        self.journal = journal

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def step_interval(self) -> float:
        """The bake time of each step of this run, in seconds."""
        override = self.state.step_interval
        return override if override is not None else self.settings.step_interval

    def label(self, index: Optional[int] = None) -> str:
        """``step 2 of 4 (25 %)`` for step ``index`` (default: the current one)."""
        st = self.state
        i = st.step_index if index is None else index
        if not st.steps:
            return "no step"
        return f"step {i + 1} of {len(st.steps)} ({st.steps[i]} %)"

    def save(self, now: float) -> None:
        """Raises StateError when the state cannot be written."""
        self.journal.save(self.state, now)

    def record(self, event: str, now: float, *, level: int = logging.INFO, **detail: Any) -> None:
        """Log and append ``event`` to the history; never raises."""
        self.journal.record(self.state, self.label(), event, now, level=level, **detail)

    def pause(self, now: float, reason: str, event: str) -> None:
        """Stop stepping for ``reason`` (checks go on). Raises StateError when the pause cannot be saved."""
        st = self.state
        st.state = State.PAUSED
        st.paused_reason = reason
        if st.step_started_at is None:
            st.step_started_at = now  # only "progressing" may carry the step-change intent
        st.message = f"paused at {self.label()}: {reason}"
        self.save(now)
        self.record(event, now, level=logging.WARNING if event != "pause" else logging.INFO, reason=reason)

    def paused_for_drift(self, now: float, when: str, event: str) -> bool:
        """Pause (True) when the files cannot be read ``when`` or hold edits made by someone else.

        Raises StateError when the pause cannot be saved.
        """
        try:
            files = self.applier.files_now()
        except CanaryError as exc:
            self.pause(now, f"cannot read the config files {when}: {exc}", event)
            return True
        changed = changed_files(self.state.expected_files, files)
        if changed:
            self.pause(now, self.drift_reason(files, changed), event)
            return True
        return False

    def drift_reason(self, files: Dict[str, str], changed: List[str]) -> str:
        """Why a run whose files hold ``files`` (``changed`` of them not as written) pauses."""
        reason = f"config files changed outside nginx-canary: {', '.join(changed)}"
        snapshot_id = self.state.snapshot_id
        if snapshot_id is not None:
            try:
                if files == self.applier.snapshot_files(snapshot_id):
                    reason += " (they hold the snapshot taken at start again)"
            except CanaryError:
                pass
        return reason + "; resume applies the step again, abort restores the snapshot"
