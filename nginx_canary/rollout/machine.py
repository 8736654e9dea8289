"""The per-rollout state machine: steps, checks, rollback, and the order of its side effects.

One :class:`Rollout` per configured rollout. It holds a :class:`RolloutState`,
persists it through a :class:`StateStore`, changes nginx only through a
:class:`SplitApplier` and reads traffic only through a :class:`TrafficSource`.
It has no clock, thread, socket or CLI: every method takes ``now`` (seconds
since the epoch) from its caller, the daemon's main loop, which calls methods
of one rollout one at a time.

The states, every decision (checks while paused, bake time, resume, promote,
gates, drift, failed step changes, bookkeeping that never blocks a rollback,
history) and the order of saves that makes every crash window recognisable
are written down in docs/ROLLOUT-DESIGN.md.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from nginx_canary.rollout.analysis import evaluate
from nginx_canary.rollout.checks import CHECKS, Check, Thresholds
from nginx_canary.rollout.streak import next_failure_streak
from nginx_canary.rollout.verdict import FAIL, PASS, Verdict
from nginx_canary.errors import BadInputError, BusyError, CanaryError, StateError
from nginx_canary.logs.window import Stats
from nginx_canary.config.model import RolloutSettings
from nginx_canary.domain import (ACTIVE_STATES, STARTABLE_STATES, TERMINAL_STATES, State, check_step_interval,
                                  check_steps, percent_number, percent_text)
from nginx_canary.rollout.store import RolloutState, StateStore

log = logging.getLogger(__name__)

#: At most one history line per this many seconds for checks that neither fail nor change the verdict.
CHECK_HISTORY_EVERY = 60.0

_VERB = {State.ROLLED_BACK: "rolled back", State.ABORTED: "aborted", State.PROMOTED: "promoted"}
# Ends the message of a terminal state that still owes its restore (see "Crash safety"):
# the whole snapshot, or only its weights when the files were edited by someone else.
_RESTORING = "; restoring the snapshot taken at start"
_RESTORING_WEIGHTS = "; restoring the weights of the snapshot taken at start, keeping the edits made outside nginx-canary"


class SplitApplier(Protocol):
    """Changes one rollout's upstream through the config engine (the real one wraps operations/transaction).

    Every method returning hashes maps the same set of paths (the files that
    hold the upstream's ``server`` lines) to the lowercase hex sha256 of their
    bytes. ``apply`` and ``restore`` must be transactions: on any failure they
    leave the files as they were before the call, and nginx serving them.
    """

    def begin(self, rollout_name: str) -> str:
        """Snapshot the upstream's files as they are now; return the snapshot id. Raises CanaryError."""

    def plan(self, percent: Fraction) -> Dict[str, str]:
        """The hashes ``apply(percent)`` would leave, from the files as they are now; writes nothing.

        Must be deterministic (same bytes and percent, same result), and equal
        to ``files_now()`` when the files already give the canary ``percent``.
        Raises CanaryError (BadInputError, ConfigError) when no such split can be made.
        """

    def apply(self, percent: Fraction) -> Dict[str, str]:
        """Give the canary ``percent`` % of the traffic: plan, write, nginx -t, reload, verify.

        Returns the hashes of the files as now written (unchanged files
        included). Raises a CanaryError (NginxRejectedError, ConfigError,
        NginxNotRunningError, BusyError, ...) after putting the files back.
        """

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        """Put the snapshot back byte for byte, reload, verify; return the restored hashes. Raises CanaryError."""

    def restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        """Give the upstream's servers the snapshot's weights on the files as they are now (other bytes kept).

        Reload and verify like ``restore``; return the hashes. Raises CanaryError.
        """

    def plan_restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        """The hashes ``restore_weights`` would leave; writes nothing. Raises CanaryError."""

    def snapshot_files(self, snapshot_id: str) -> Dict[str, str]:
        """The hashes of the files held by the snapshot. Raises StateError for an unknown or damaged snapshot."""

    def files_now(self) -> Dict[str, str]:
        """The hashes of the files as they are on disk now. Raises CanaryError when one cannot be read."""

    def hashes_of(self, paths: Sequence[str]) -> Dict[str, str]:
        """The hashes of these files now, cheaply (no config parse); "" for one that cannot be read. Never raises."""


class TrafficSource(Protocol):
    """The in-memory log windows of one rollout's upstream."""

    def groups(self, window_seconds: float, now: float) -> Tuple[Stats, Stats]:
        """``(canary, stable)`` stats over the ``window_seconds`` ending at ``now``."""


#: ``gates(name, now)`` -> ``(state, reason)`` or None (gate not configured); never blocks.
GateSource = Callable[[str, float], Optional[Tuple[str, str]]]
#: ``extra_checks(now)`` -> checks to run with the analysis ones; never blocks.
ExtraChecks = Callable[[float], Tuple[Check, ...]]
GATE_OPEN = "open"


def _changed(expected: Dict[str, str], actual: Dict[str, str]) -> List[str]:
    return sorted(p for p in set(expected) | set(actual) if expected.get(p) != actual.get(p))


def _copy(state: RolloutState) -> RolloutState:
    return RolloutState.from_dict(state.to_dict())


class Rollout:
    """One rollout's state machine. Not thread-safe: one caller (the daemon's main loop) at a time.

    The state is loaded from ``store`` (a fresh ``idle`` state if none is
    saved). After a daemon start, call :meth:`recover` once before anything
    else. Every public method takes ``now``; none reads a clock.
    """

    def __init__(self, settings: RolloutSettings, store: StateStore, applier: SplitApplier,
                 traffic: TrafficSource, *, history_every: float = CHECK_HISTORY_EVERY,
                 gates: Optional[GateSource] = None, extra_checks: Optional[ExtraChecks] = None,
                 clock: Optional[Callable[[], float]] = None) -> None:
        """Raises StateError when the saved state cannot be read.

        ``gates(name, now)`` answers ``(state, reason)`` for a configured gate
        (``open``, ``closed`` or ``pending``) or None for one that is not
        configured; ``extra_checks(now)`` gives checks run with the analysis
        ones (the HTTP checks). Both must answer at once (no blocking I/O).
        ``clock``, when given, stamps the history records of finished step
        changes and restores with the time they finished (so the history
        shows how long a reload took); every decision still uses ``now``.
        """
        self.settings = settings
        self.store = store
        self.applier = applier
        self.traffic = traffic
        self.gates = gates
        self.extra_checks = extra_checks
        self.clock = clock
        self.history_every = history_every
        loaded = store.load(settings.name)
        self.state: RolloutState = loaded if loaded is not None else RolloutState(name=settings.name)
        # `start --step-interval` for this run; persisted in the "start" history record.
        self._step_interval: Optional[float] = None
        self._last_recorded: Optional[Tuple[str, float]] = None  # (verdict, at) of the last recorded check
        self._now: Optional[float] = None
        self._last_gate: Optional[Tuple[str, str, str]] = None  # (gate, state, reason) last recorded
        self._failed_in_flight: Optional[float] = None  # when a check failed during the step change under way
        #: Called as ``listener(event, record)`` after each history record (metrics, webhooks); ``record`` is
        #: the history line's data. A listener must return quickly and its errors are logged, never raised.
        self.listeners: List[Callable[[str, Dict[str, Any]], None]] = []

    # -- read-only views ----------------------------------------------------------

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def step_interval(self) -> float:
        """The bake time of each step of this run, in seconds."""
        return self._step_interval if self._step_interval is not None else self.settings.step_interval

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds.from_settings(self.settings.analysis)

    @property
    def failure_threshold(self) -> int:
        return self.settings.analysis.failure_threshold

    def reconfigure(self, settings: RolloutSettings) -> None:
        """Take new settings (SIGHUP). A run in progress keeps its steps and any ``--step-interval``.

        Raises BadInputError when the rollout name differs.
        """
        if settings.name != self.name:
            raise BadInputError(f"settings of rollout {settings.name!r} given to rollout {self.name!r}")
        self.settings = settings

    def status(self, now: Optional[float] = None) -> Dict[str, Any]:
        """Plain JSON data for ``status``; ``now`` defaults to the latest time any method was given.

        ``step`` is the index into ``steps``; percents are numbers;
        ``time_left_in_step`` is the bake time left while progressing (0 when
        it is over and the rollout waits for a conclusive pass), else None.
        ``canary`` / ``stable`` are the group summaries of the last check.
        """
        now = self._now if now is None else now
        st = self.state
        steps = list(st.steps) if st.steps else [percent_text(s) for s in self.settings.steps]
        verdict = st.last_verdict
        time_left = None
        if st.state == State.PROGRESSING and st.step_started_at is not None and now is not None:
            time_left = max(0.0, self.step_interval - (now - st.step_started_at))
        return {
            "name": self.name,
            "upstream": self.settings.upstream,
            "state": st.state,
            "step": st.step_index,
            "steps": [percent_number(s) for s in steps],
            "canary_percent": percent_number(st.canary_percent),
            "started_at": st.started_at,
            "step_started_at": st.step_started_at,
            "step_interval": self.step_interval,
            "time_left_in_step": time_left,
            "failure_streak": st.failure_streak,
            "failure_threshold": self.failure_threshold,
            "on_success": self.settings.on_success,
            "paused_reason": st.paused_reason,
            "waiting_for_gate": st.gate,
            "snapshot_id": st.snapshot_id,
            "updated_at": st.updated_at,
            "canary": None if verdict is None else verdict.get("canary"),
            "stable": None if verdict is None else verdict.get("stable"),
            "last_check": verdict,
            "message": st.message,
        }

    # -- commands -------------------------------------------------------------------

    def start(self, now: float, steps: Optional[Sequence[Fraction]] = None,
              step_interval: Optional[float] = None) -> None:
        """Snapshot the upstream's files and apply the first step.

        Raises:
            BadInputError: the rollout is active or failed, or steps / step_interval are invalid.
            CanaryError: the snapshot failed (nothing changed), or the first
                step could not be applied (the rollout is then rolled back, or
                left as it was for a BusyError).
            StateError: the state cannot be saved.
        """
        self._now = now
        previous = _copy(self.state)
        if previous.state in ACTIVE_STATES:
            raise BadInputError(f"rollout {self.name!r} is already {previous.state} at {self._label()}; "
                                "abort it (or let it finish) before starting again")
        if previous.state not in STARTABLE_STATES:
            raise BadInputError(f"rollout {self.name!r} failed and still owes a restore of snapshot "
                                f"{previous.snapshot_id}: fix the cause and run abort to retry it")
        if previous.snapshot_id is not None:
            raise BadInputError(f"rollout {self.name!r} is {previous.state} but still restoring snapshot "
                                f"{previous.snapshot_id} (retried at every check); start it again once restored")
        chosen = check_steps(self.settings.steps if steps is None else steps)
        interval = None if step_interval is None else check_step_interval(step_interval)
        snapshot_id = self.applier.begin(self.name)
        try:
            at_start = self.applier.snapshot_files(snapshot_id)
        except CanaryError:
            at_start = {}  # the restore will say what is wrong with the snapshot
        self.state = RolloutState(
            name=self.name, state=State.PROGRESSING, step_index=0,
            steps=tuple(percent_text(s) for s in chosen), canary_percent="0",
            snapshot_id=snapshot_id, started_at=now, message="starting", upstream=self.settings.upstream,
            expected_files=dict(at_start),
        )
        self._step_interval = interval
        self._last_recorded = None
        self._last_gate = None
        self._record("start", now, snapshot_id=snapshot_id, steps=list(self.state.steps), step_interval=interval,
                     effective_step_interval=self.step_interval, on_success=self.settings.on_success)
        if self._gate("pre_rollout", now) is not None:
            # The first step waits for the gate; checks (and protection) run meanwhile.
            self.state.step_started_at = now
            self._save(now)
            return
        self._move_to_step(now, 0, manual=True, revert_to=previous)

    def tick(self, now: float, verdict: Optional[Verdict] = None) -> Optional[Verdict]:
        """Run the checks once and act on them. Call it every ``analysis.interval`` for every rollout:

        it is a no-op returning None for an idle or finished rollout, and
        retries a step change or restore that a BusyError left undone.
        ``verdict``, when given, is one :meth:`observe` already judged (and
        counted) while a step change was under way: it is acted on, not judged again.
        Returns the verdict acted on, or None when none was. Never raises
        a CanaryError from the applier: failures become transitions. Raises
        StateError when the state cannot be saved.
        """
        self._now = now
        st = self.state
        if st.state in TERMINAL_STATES and st.snapshot_id is not None:
            self._settle_restore(now)  # owed since a BusyError
            return None
        if st.state not in ACTIVE_STATES:
            return None
        if st.step_started_at is None:
            # A step change left in flight by a BusyError during recovery: settle it first.
            self._settle_step_change(now)
            return None
        # Between step changes too: someone's edit pauses the rollout at once, not at the next step.
        self.check_drift(now)
        if verdict is None:
            verdict = self._judge(now)
        if st.failure_streak >= self.failure_threshold:
            self._restore_snapshot(now, State.ROLLED_BACK, f"{st.failure_streak} consecutive failed checks "
                                   f"(failure_threshold {self.failure_threshold}): {verdict.reason}", "rollback")
            return verdict
        if st.state == State.PROGRESSING and st.gate == "pre_rollout":
            if self._gate("pre_rollout", now) is None:
                st.gate = None  # opened (or no longer configured): the first step now
                self._move_to_step(now, 0, manual=False, revert_to=_copy(st))
        elif (st.state == State.PROGRESSING and verdict.verdict == PASS
                and now - st.step_started_at >= self.step_interval):
            self._advance(now, verdict)
        return verdict

    def check_drift(self, now: float) -> bool:
        """Pause a progressing rollout (between step changes) whose files someone else changed; True if it paused.

        Every :meth:`tick` does it; the daemon also calls it as soon as
        watchdog reports an edit. Raises StateError when the pause cannot be saved.
        """
        self._now = now
        st = self.state
        if st.state != State.PROGRESSING or not st.expected_files or st.step_started_at is None:
            return False
        seen = self.applier.hashes_of(sorted(st.expected_files))
        changed = _changed(st.expected_files, seen)
        if not changed:
            return False
        self._pause(now, self._drift_reason(seen, changed), "drift")
        return True

    def observe(self, now: float) -> Optional[Verdict]:
        """Run the checks and count their verdict, but change nothing on nginx (None when not active).

        For the daemon to keep its check cadence while a step change of this
        (or another) rollout is under way on its worker thread: the verdict
        goes into the failure streak, the status and the history like a
        :meth:`tick`'s, and the next ``tick(now, verdict)`` acts on it. A
        failed check during a step change restarts the bake time of the step
        being applied. Raises StateError when the state cannot be saved.
        """
        self._now = now
        if self.state.state not in ACTIVE_STATES:
            return None
        return self._judge(now)

    def _judge(self, now: float) -> Verdict:
        """The checks' verdict on the window ending at ``now``, counted in the failure streak and recorded."""
        st = self.state
        canary, stable = self.traffic.groups(self.settings.analysis.window, now)
        checks = CHECKS + (self.extra_checks(now) if self.extra_checks is not None else ())
        verdict = evaluate(canary, stable, self.thresholds, now, checks)
        st.last_verdict = verdict.to_dict()
        st.failure_streak = next_failure_streak(st.failure_streak, verdict.verdict)
        if verdict.verdict == FAIL:
            if st.step_started_at is None:
                self._failed_in_flight = now  # the step being applied restarts its bake time from here
            else:
                st.step_started_at = now
        if self._should_record(verdict.verdict, now):
            try:
                self._save(now)
            except StateError as exc:
                # Never let bookkeeping stand between a failing canary and its rollback.
                log.error("rollout %s: cannot save the check: %s", self.name, exc)
            self._record("check", now, level=logging.WARNING if verdict.verdict == FAIL else logging.DEBUG,
                         verdict=verdict, failure_streak=st.failure_streak, failure_threshold=self.failure_threshold)
        return verdict

    def pause(self, now: float, reason: Optional[str] = None) -> None:
        """Stop stepping (checks and automatic rollback go on). Raises BadInputError unless progressing."""
        self._now = now
        if self.state.state != State.PROGRESSING:
            raise BadInputError(f"rollout {self.name!r} is {self.state.state}, "
                                "only a progressing rollout can be paused")
        self._pause(now, reason or "paused by the operator", "pause")

    def resume(self, now: float) -> None:
        """Go on stepping; the current step's bake time starts again.

        If the files differ from what this rollout wrote, the step is applied
        again on the files as they are now.

        Raises:
            BadInputError: the rollout is not paused.
            CanaryError: the files cannot be read (still paused), or the step
                could not be applied again (rolled back; still paused for a BusyError).
        """
        self._now = now
        st = self.state
        if st.state != State.PAUSED:
            raise BadInputError(f"rollout {self.name!r} is {st.state}, only a paused rollout can be resumed")
        files = self.applier.files_now()
        changed = _changed(st.expected_files, files)
        if changed and st.gate == "pre_rollout":
            st.expected_files = files  # no step of ours is on them yet: the edit is simply taken
        elif changed:
            self._record("resume", now, changed_outside=changed)
            self._move_to_step(now, st.step_index, manual=True, revert_to=_copy(st))
            return
        st.state = State.PROGRESSING
        st.paused_reason = None
        st.step_started_at = now
        st.message = f"at {self._label()}: resumed, bake time restarted"
        self._save(now)
        self._record("resume", now, changed_outside=changed)

    def promote(self, now: float, full: bool = False) -> None:
        """Move to the next step now; at the last step, or with ``full``, complete the rollout now.

        Raises:
            BadInputError: the rollout is not progressing or paused.
            CanaryError: a step could not be applied or the restore failed (the state says what followed).
        """
        self._now = now
        st = self.state
        if st.state not in ACTIVE_STATES:
            raise BadInputError(f"rollout {self.name!r} is {st.state}, only a progressing or paused rollout "
                                "can be promoted")
        last = len(st.steps) - 1
        self._record("promote", now, full=full, gate=st.gate)
        waiting_first = st.gate == "pre_rollout"
        st.gate = None  # a manual promote overrides any gate
        if waiting_first and not full:
            self._move_to_step(now, 0, manual=True, revert_to=_copy(st))
        elif st.step_index >= last or (full and self.settings.on_success == "restore"):
            self._complete(now, "promoted by the operator", manual=True)
        elif full:
            self._move_to_step(now, last, manual=True, revert_to=_copy(st))
            self._complete(now, "promoted to 100 % by the operator", manual=True)
        else:
            self._move_to_step(now, st.step_index + 1, manual=True, revert_to=_copy(st))

    def abort(self, now: float, reason: Optional[str] = None) -> None:
        """Roll back to the snapshot taken at start -> ``aborted``; from ``failed``, retry the restore.

        Raises:
            BadInputError: the rollout is not progressing, paused or failed.
            CanaryError: the restore failed (the rollout is then ``failed``).
        """
        self._now = now
        st = self.state
        if st.state not in ACTIVE_STATES + (State.FAILED,):
            if st.snapshot_id is not None:
                raise BadInputError(f"rollout {self.name!r} is {st.state} and already restoring snapshot "
                                    f"{st.snapshot_id} (retried at every check)")
            raise BadInputError(f"rollout {self.name!r} is {st.state}, nothing to abort")
        error = self._restore_snapshot(now, State.ABORTED, reason or "aborted by the operator", "abort")
        if error is not None:
            raise error

    def recover(self, now: float) -> Optional[str]:
        """Reconcile the saved state with the files after a daemon start (see "Crash safety").

        Call once, after the transaction journal's recovery. Returns a
        one-line account of what was done, or None when there was nothing to
        do. Raises StateError when the state cannot be saved.
        """
        self._now = now
        st = self.state
        self._step_interval = self._saved_step_interval()
        if st.state in ACTIVE_STATES:
            before = st.to_dict()
            if st.snapshot_id is None:
                self._restore_failed(now, f"{st.state} at {self._label()}", None, CanaryError(
                    "the saved state records no snapshot for this run"))
            elif st.state == State.PROGRESSING and st.step_started_at is None:
                self._settle_step_change(now)
            else:
                self._recover_steady(now)
            return None if st.to_dict() == before and self.state is st else self.state.message
        if st.state in TERMINAL_STATES and st.snapshot_id is not None:
            self._settle_restore(now)
            return self.state.message
        return None

    # -- transitions -------------------------------------------------------------------

    def _advance(self, now: float, verdict: Verdict) -> None:
        st = self.state
        try:
            files = self.applier.files_now()
        except CanaryError as exc:
            self._pause(now, f"cannot read the config files before the next step: {exc}", "drift")
            return
        changed = _changed(st.expected_files, files)
        if changed:
            self._pause(now, self._drift_reason(files, changed), "drift")
            return
        last = st.step_index + 1 >= len(st.steps)
        if self._gate("confirm_promotion" if last else "confirm_step", now) is not None:
            return
        if not last:
            self._move_to_step(now, st.step_index + 1, manual=False, revert_to=_copy(st))
        else:
            self._complete(now, f"{self._label()} passed its bake time of {self.step_interval:g} s: {verdict.reason}",
                           manual=False)

    def _gate(self, name: str, now: float) -> Optional[str]:
        """None when gate ``name`` lets the run on (open, or not configured); else its reason, recorded.

        The state shows the gate waited at; the history gets a ``gate`` record
        whenever the gate's state or reason changes, not at every check.
        """
        st = self.state
        answer = self.gates(name, now) if self.gates is not None else None
        if answer is None or answer[0] == GATE_OPEN:
            if st.gate == name:
                st.gate = None
                if answer is not None:
                    self._record("gate", now, gate=name, gate_state=answer[0], reason=answer[1])
            return None
        gate_state, reason = answer
        changed = st.gate != name or self._last_gate != (name, gate_state, reason)
        st.gate = name
        self._last_gate = (name, gate_state, reason)
        if changed:
            st.message = f"{reason} (at {self._label()})" if name != "pre_rollout" else reason
            self._save(now)
            self._record("gate", now, gate=name, gate_state=gate_state, reason=reason)
        return reason

    def _move_to_step(self, now: float, index: int, *, manual: bool, revert_to: RolloutState) -> bool:
        """Apply step ``index`` (intent, apply, done; see "Crash safety"). True when it is applied.

        On failure: BusyError -> back to ``revert_to``; anything else -> roll
        back to the snapshot. ``manual`` re-raises the error afterwards.
        """
        st = self.state
        percent = Fraction(st.steps[index])
        label = self._label(index)
        from_percent = st.canary_percent
        # What the files hold until the change is done; a failed apply leaves them so.
        files_before = dict(st.expected_files)
        try:
            planned = self.applier.plan(percent)
        except CanaryError as exc:
            return self._move_failed(now, label, exc, manual, revert_to, files_before)
        st.state = State.PROGRESSING
        st.gate = None
        st.step_index = index
        st.canary_percent = st.steps[index]
        st.expected_files = dict(planned)
        st.step_started_at = None
        st.paused_reason = None
        st.message = f"applying {label}"
        self._save(now)
        self._failed_in_flight = None
        try:
            applied = self.applier.apply(percent)
        except CanaryError as exc:
            return self._move_failed(now, label, exc, manual, revert_to, files_before)
        st.expected_files = dict(applied)
        st.step_started_at = now if self._failed_in_flight is None else max(now, self._failed_in_flight)
        self._failed_in_flight = None
        st.message = f"at {label}"
        self._save(now)
        self._record("step", self._finished_at(now), from_percent=from_percent, to_percent=st.canary_percent,
                     manual=manual, files=sorted(applied))
        return True

    def _move_failed(self, now: float, label: str, exc: CanaryError, manual: bool, revert_to: RolloutState,
                     files_before: Dict[str, str]) -> bool:
        if revert_to.state in ACTIVE_STATES:
            # Checks observed while the change was under way count in the state it falls back to.
            revert_to.failure_streak = self.state.failure_streak
            revert_to.last_verdict = self.state.last_verdict
        if isinstance(exc, BusyError):
            self.state = revert_to
            self.state.message = (f"could not apply {label}: {exc}" +
                                  ("" if manual else "; trying again at the next check"))
            self._save(now)
            self._record("busy", now, level=logging.WARNING, target=label, error=str(exc))
        elif revert_to.state not in ACTIVE_STATES or (revert_to.step_started_at is None and revert_to.step_index == 0):
            # The first step of a start (or its redo at recovery): nothing of ours is on the files; the run ends.
            self.state.expected_files = files_before
            self._record("apply_failed", now, level=logging.ERROR, target=label, error=str(exc))
            self._restore_snapshot(now, State.ROLLED_BACK, f"could not apply {label}: {exc}", "rollback")
        else:
            # The applier put the files back: nginx still serves the step that passed its checks.
            # Rolling back would meet the same nginx -t, disk or reload trouble; an operator decides.
            in_flight = revert_to.step_started_at is None  # a step change redone at recovery
            self.state = revert_to
            if in_flight:
                # It describes the failed change; the files (and nginx) hold the step before it.
                self.state.step_index -= 1
                self.state.canary_percent = self.state.steps[self.state.step_index]
                try:
                    self.state.expected_files = self.applier.files_now()
                except CanaryError:
                    self.state.expected_files = files_before
            self._record("apply_failed", now, level=logging.ERROR, target=label, error=str(exc))
            if manual:
                self.state.message = f"could not apply {label}: {exc}; nothing changed"
                self._save(now)
            else:
                self._pause(now, f"could not apply {label}: {exc}; the canary keeps "
                                 f"{self.state.canary_percent} %; resume tries again, abort restores the snapshot",
                            "pause")
        if manual:
            raise exc
        return False

    def _complete(self, now: float, reason: str, *, manual: bool) -> None:
        if self.settings.on_success == "restore":
            error = self._restore_snapshot(now, State.PROMOTED, f"{reason} (on_success: restore)", "promoted")
            if error is not None and manual:
                raise error
            return
        st = self.state
        st.state = State.PROMOTED
        st.snapshot_id = None  # the 100 % files are the new baseline: no restore owed
        st.paused_reason = None
        st.message = f"promoted: {reason}; the canary keeps {st.canary_percent} % (on_success: keep)"
        self._save(now)
        self._record("promoted", now, reason=reason, manual=manual)

    def _pause(self, now: float, reason: str, event: str) -> None:
        st = self.state
        st.state = State.PAUSED
        st.paused_reason = reason
        if st.step_started_at is None:
            st.step_started_at = now  # only "progressing" may carry the step-change intent
        st.message = f"paused at {self._label()}: {reason}"
        self._save(now)
        self._record(event, now, level=logging.WARNING if event != "pause" else logging.INFO, reason=reason)

    def _restore_snapshot(self, now: float, final: State, reason: str, event: str) -> Optional[CanaryError]:
        """Put the start snapshot back and end in ``final`` (``failed`` if the restore fails).

        Returns the restore's error, or None. The intent is saved first (see
        "Crash safety"); if even that save fails the restore still runs:
        nginx comes before bookkeeping.
        """
        st = self.state
        snapshot_id = st.snapshot_id
        summary = f"{_VERB[final]}: {reason}"
        if snapshot_id is None:
            # Only a state file from elsewhere lacks one (see recover): nothing can be put back.
            if final == State.ABORTED:
                st.state = final
                st.message = f"{summary}; no snapshot was recorded, the files are left as they are"
                self._save(now)
                self._record(event, now, level=logging.WARNING, reason=reason, snapshot_id=None)
                return None
            error = CanaryError("the saved state records no snapshot for this run")
            self._restore_failed(now, summary, None, error)
            return error
        try:
            before = self.applier.files_now()
        except CanaryError as exc:
            log.warning("rollout %s: cannot hash the config files before restoring: %s", self.name, exc)
            before = dict(st.expected_files)
        changed = _changed(st.expected_files, before)
        # Someone else's edit is kept: only the weights go back (see "Foreign edits").
        weights_only = bool(changed)
        st.state = final
        st.paused_reason = None
        st.expected_files = before
        st.message = summary + (_RESTORING_WEIGHTS if weights_only else _RESTORING)
        try:
            self._save(now)
        except StateError as exc:
            log.error("rollout %s: restoring the snapshot although its intent cannot be saved: %s", self.name, exc)
        self._record(event, now, level=logging.WARNING if final != State.PROMOTED else logging.INFO,
                     reason=reason, snapshot_id=snapshot_id, changed_outside=changed)
        try:
            original: Optional[Dict[str, str]] = self.applier.snapshot_files(snapshot_id)
        except CanaryError:
            original = None  # restore() will say what is wrong with the snapshot
        if original is not None and before == original:
            # Nothing to write (a first step that never took, or files put back by hand).
            self._restored(now, summary, snapshot_id, before, written=False)
            return None
        return self._write_snapshot(now, summary, snapshot_id, weights_only=weights_only)

    def _write_snapshot(self, now: float, summary: str, snapshot_id: str, *,
                        weights_only: bool = False) -> Optional[CanaryError]:
        """``applier.restore`` (or ``restore_weights``) and its outcome: done, still owed (BusyError) or ``failed``."""
        marker = _RESTORING_WEIGHTS if weights_only else _RESTORING
        try:
            if weights_only:
                restored = self.applier.restore_weights(snapshot_id)
            else:
                restored = self.applier.restore(snapshot_id)
        except BusyError as exc:
            # Nothing changed; the restore stays owed and the next tick tries again.
            self.state.message = f"{summary}{marker}: {exc}; trying again at the next check"
            self._save(now)
            self._record("busy", now, level=logging.WARNING, target="restore", error=str(exc))
            return exc
        except CanaryError as exc:
            self._restore_failed(now, summary, snapshot_id, exc)
            return exc
        self._restored(now, summary, snapshot_id, restored, written=True, weights_only=weights_only)
        return None

    def _restored(self, now: float, summary: str, snapshot_id: str, files: Dict[str, str], *, written: bool,
                  weights_only: bool = False) -> None:
        st = self.state
        st.expected_files = dict(files)
        st.snapshot_id = None
        st.canary_percent = "0"
        if weights_only:
            how = "the weights at start restored, the edits made outside nginx-canary kept"
        else:
            how = "original files restored" if written else "the files already held the snapshot"
        st.message = f"{summary}; {how} (snapshot {snapshot_id})"
        self._save(now)
        self._record("restored", self._finished_at(now), snapshot_id=snapshot_id, written=written,
                     weights_only=weights_only, files=sorted(files))

    def _finished_at(self, now: float) -> float:
        return max(now, self.clock()) if self.clock is not None else now

    def _restore_failed(self, now: float, summary: str, snapshot_id: Optional[str], exc: CanaryError) -> None:
        st = self.state
        st.state = State.FAILED
        st.message = (f"FAILED: {summary}, but restoring snapshot {snapshot_id or '(none)'} failed: {exc}. "
                      f"nginx may still give the canary {percent_text(Fraction(st.canary_percent))} %. "
                      f"Fix the cause, then run `nginx-canary abort {self.name}` to retry the restore")
        self._save(now)
        self._record("restore_failed", now, level=logging.ERROR, snapshot_id=snapshot_id, error=str(exc))

    # -- recovery ----------------------------------------------------------------------

    def _settle_step_change(self, now: float) -> None:
        """Finish a step change the saved state has in flight (``step_started_at`` None)."""
        st = self.state
        label = self._label()
        try:
            files = self.applier.files_now()
        except CanaryError as exc:
            self._pause(now, f"cannot read the config files after a restart: {exc}", "recovered")
            return
        if files == st.expected_files:
            st.step_started_at = now
            st.message = f"at {label}: applied before the restart, bake time restarted"
            self._save(now)
            self._record("recovered", now, level=logging.WARNING, outcome="step change had finished")
            return
        try:
            planned: Optional[Dict[str, str]] = self.applier.plan(Fraction(st.canary_percent))
        except CanaryError:
            planned = None
        if planned == st.expected_files:
            self._record("recovered", now, level=logging.WARNING, outcome="step change had not happened, applying it again")
            self._move_to_step(now, st.step_index, manual=False, revert_to=_copy(st))
            return
        self._pause(now, self._drift_reason(files, _changed(st.expected_files, files)), "recovered")

    def _recover_steady(self, now: float) -> None:
        st = self.state
        try:
            files = self.applier.files_now()
        except CanaryError as exc:
            self._pause(now, f"cannot read the config files after a restart: {exc}", "recovered")
            return
        changed = _changed(st.expected_files, files)
        if changed:
            self._pause(now, self._drift_reason(files, changed), "recovered")
        elif st.state == State.PROGRESSING:
            st.step_started_at = now
            st.message = f"at {self._label()}: resumed after a restart, bake time restarted"
            self._save(now)
            self._record("recovered", now, level=logging.WARNING, outcome="files as expected, step resumed")

    def _settle_restore(self, now: float) -> None:
        """Finish the restore a terminal state still owes (it holds a ``snapshot_id``)."""
        st = self.state
        snapshot_id = st.snapshot_id
        assert snapshot_id is not None
        weights_only = _RESTORING_WEIGHTS in st.message
        summary = st.message.partition(_RESTORING_WEIGHTS if weights_only else _RESTORING)[0] or _VERB[st.state]
        try:
            files = self.applier.files_now()
            if weights_only:
                original = self.applier.plan_restore_weights(snapshot_id)
            else:
                original = self.applier.snapshot_files(snapshot_id)
        except CanaryError as exc:
            self._restore_failed(now, summary, snapshot_id, exc)
            return
        if weights_only and files == original:
            # restore_weights would change nothing more: it had finished (or the weights were put back by hand).
            self._record("recovered", now, level=logging.WARNING, outcome="restore of the weights had finished")
            self._restored(now, summary, snapshot_id, files, written=True, weights_only=True)
        elif weights_only and files == st.expected_files:
            self._record("recovered", now, level=logging.WARNING, outcome="restore of the weights had not happened, restoring")
            self._write_snapshot(now, summary, snapshot_id, weights_only=True)
        elif weights_only:
            changed = _changed(st.expected_files, files)
            self._restore_failed(now, summary, snapshot_id, CanaryError(
                f"config files changed outside nginx-canary while the restore was interrupted: {', '.join(changed)}; "
                "nothing overwritten"))
        elif files == original:
            self._record("recovered", now, level=logging.WARNING, outcome="restore had finished")
            self._restored(now, summary, snapshot_id, files, written=True)
        elif files == st.expected_files:
            self._record("recovered", now, level=logging.WARNING, outcome="restore had not happened, restoring")
            self._write_snapshot(now, summary, snapshot_id)
        else:
            changed = _changed(st.expected_files, files)
            self._restore_failed(now, summary, snapshot_id, CanaryError(
                f"config files changed outside nginx-canary while the restore was interrupted: {', '.join(changed)}; "
                "nothing overwritten"))

    def _saved_step_interval(self) -> Optional[float]:
        """The ``--step-interval`` of the current run, from its "start" history record."""
        if self.state.state not in ACTIVE_STATES:
            return None
        try:
            records = self.store.history(self.name)
        except StateError as exc:
            log.warning("rollout %s: cannot read the history for this run's step interval: %s", self.name, exc)
            return None
        for record in reversed(records):
            if record.get("event") == "start":
                value = (record.get("detail") or {}).get("step_interval")
                try:
                    return None if value is None else check_step_interval(value)
                except BadInputError:
                    return None
        return None

    # -- helpers ----------------------------------------------------------------------

    def _label(self, index: Optional[int] = None) -> str:
        st = self.state
        i = st.step_index if index is None else index
        if not st.steps:
            return "no step"
        return f"step {i + 1} of {len(st.steps)} ({st.steps[i]} %)"

    def _drift_reason(self, files: Dict[str, str], changed: List[str]) -> str:
        reason = f"config files changed outside nginx-canary: {', '.join(changed)}"
        snapshot_id = self.state.snapshot_id
        if snapshot_id is not None:
            try:
                if files == self.applier.snapshot_files(snapshot_id):
                    reason += " (they hold the snapshot taken at start again)"
            except CanaryError:
                pass
        return reason + "; resume applies the step again, abort restores the snapshot"

    def _should_record(self, verdict: str, now: float) -> bool:
        last = self._last_recorded
        if verdict == FAIL or last is None or last[0] != verdict or now - last[1] >= self.history_every:
            self._last_recorded = (verdict, now)
            return True
        return False

    def _save(self, now: float) -> None:
        self.state.updated_at = now
        self.store.save(self.state)

    def _record(self, event: str, now: float, *, level: int = logging.INFO, **detail: Any) -> None:
        """Append to the history; a failure is logged, never raised: the state file is the truth."""
        st = self.state
        if event == "check":
            verdict = detail["verdict"]
            log.log(level, "rollout %s: check %s at %s: %s", self.name, verdict.verdict, self._label(), verdict.reason)
        elif "error" in detail:
            log.log(level, "rollout %s: %s: %s (%s)", self.name, event, st.message, detail["error"])
        else:
            log.log(level, "rollout %s: %s: %s", self.name, event, st.message)
        record: Optional[Dict[str, Any]] = None
        try:
            record = self.store.append_history(self.name, event, rollout=st, at=now, message=st.message, **detail)
        except StateError as exc:
            log.error("rollout %s: cannot record %r in the history: %s", self.name, event, exc)
        if self.listeners:
            if record is None:
                plain = {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in detail.items()}
                record = {"time": now, "event": event, "state": st.state, "step": st.step_index,
                          "canary_percent": st.canary_percent, "detail": {"message": st.message, **plain}}
            for listener in list(self.listeners):
                try:
                    listener(event, record)
                except Exception:  # noqa: BLE001 - observers must never break a rollout
                    log.exception("rollout %s: a listener failed on %r", self.name, event)
