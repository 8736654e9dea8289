"""The per-rollout state machine: its commands, its checks and the transitions they decide.

One :class:`Rollout` per configured rollout. It holds a :class:`RolloutState`,
persists it through a :class:`StateStore`, changes nginx only through a
:class:`SplitApplier` and reads traffic only through a :class:`TrafficSource`.
It has no clock, thread, socket or CLI: every method takes ``now`` (seconds
since the epoch) from its caller, the daemon's main loop, which calls methods
of one rollout one at a time. Its parts: run.py (what they share),
stepping.py (applying a step), restore.py (the snapshot back), recovery.py
(after a restart), step_checks.py (checks during a step change), journal.py
(saves and history), status_view.py (the ``status`` wire form).

The states, every decision (checks while paused, bake time, resume, promote,
gates, drift, failed step changes, bookkeeping that never blocks a rollback,
history) and the order of saves that makes every crash window recognisable
are written down in docs/ROLLOUT-DESIGN.md.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Sequence

from nginx_canary.config.model import RolloutSettings
from nginx_canary.domain import ACTIVE_STATES, STARTABLE_STATES, TERMINAL_STATES, State, check_step_interval, \
    check_steps, percent_text
from nginx_canary.errors import BadInputError, CanaryError
from nginx_canary.rollout.gating import Gating
from nginx_canary.rollout.judging import Judging
from nginx_canary.rollout.verdict import INCONCLUSIVE, PASS, Verdict
from nginx_canary.rollout.journal import CHECK_HISTORY_EVERY, Journal, Listener
from nginx_canary.rollout.ports import ExtraChecks, GateSource, LogTrouble, SplitApplier, TrafficSource
from nginx_canary.rollout.progress import Progress
from nginx_canary.rollout.recovery import Recovery
from nginx_canary.rollout.restore import Restorer
from nginx_canary.rollout.run import Run, changed_files, copy_state
from nginx_canary.rollout.status_view import status_view
from nginx_canary.rollout.step_checks import StepChangeChecks
from nginx_canary.rollout.stepping import StepMover
from nginx_canary.rollout.store import RolloutState, StateStore

log = logging.getLogger(__name__)


class Rollout:
    """One rollout's state machine. Not thread-safe: one caller (the daemon's main loop) at a time.

    The state is loaded from ``store`` (a fresh ``idle`` state if none is
    saved). After a daemon start, call :meth:`recover` once before anything
    else. Every public method takes ``now``; none reads a clock.
    """

    def __init__(self, settings: RolloutSettings, store: StateStore, applier: SplitApplier,
                 traffic: TrafficSource, *, history_every: float = CHECK_HISTORY_EVERY,
                 gates: Optional[GateSource] = None, extra_checks: Optional[ExtraChecks] = None,
                 log_trouble: Optional[LogTrouble] = None, clock: Optional[Callable[[], float]] = None) -> None:
        """Raises StateError when the saved state cannot be read.

        ``gates(name, now)`` answers ``(state, reason)`` for a configured gate
        (``open``, ``closed`` or ``pending``) or None for one that is not
        configured; ``extra_checks(now)`` gives checks run with the analysis
        ones (the HTTP checks); ``log_trouble()`` why the traffic cannot be
        read, which pauses a progressing rollout. All must answer at once (no blocking I/O).
        ``clock``, when given, stamps the history records of finished step
        changes and restores with the time they finished (so the history
        shows how long a reload took); every decision still uses ``now``.
        """
        self.store = store
        self.applier = applier
        self.traffic = traffic
        self.gates = gates
        self.extra_checks = extra_checks
        self.log_trouble = log_trouble
        loaded = store.load(settings.name)
        self.journal = Journal(settings.name, store, history_every=history_every, clock=clock)
        self.run = Run(settings, loaded if loaded is not None else RolloutState(name=settings.name), applier,
                       self.journal)
        #: Checks judged while a step change is under way (step_checks.py).
        self.checks = StepChangeChecks()
        self.restorer = Restorer(self.run)
        self.judging = Judging(self.run, traffic, self.checks)
        self.mover = StepMover(self.run, self.restorer, self.checks, self.judging.begin_step)
        self.recovery = Recovery(self.run, self.mover, self.restorer)
        self.gating = Gating(self.run)
        self.progress = Progress(self.run, self.mover, self.gating, self.judging)
        self._now: Optional[float] = None

    # -- read-only views ----------------------------------------------------------

    @property
    def state(self) -> RolloutState:
        return self.run.state

    @property
    def settings(self) -> RolloutSettings:
        return self.run.settings

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def listeners(self) -> List[Listener]:
        """Called as ``listener(event, record)`` after each history record (metrics, webhooks)."""
        return self.journal.listeners

    @property
    def step_interval(self) -> float:
        """The bake time of each step of this run, in seconds."""
        return self.run.step_interval

    @property
    def failure_threshold(self) -> int:
        return self.settings.analysis.failure_threshold

    def reconfigure(self, settings: RolloutSettings) -> None:
        """Take new settings (SIGHUP). A run in progress keeps its steps and any ``--step-interval``.

        Raises BadInputError when the rollout name differs.
        """
        if settings.name != self.name:
            raise BadInputError(f"settings of rollout {settings.name!r} given to rollout {self.name!r}")
        self.run.settings = settings

    def status(self, now: Optional[float] = None) -> Dict[str, Any]:
        """Plain JSON data for ``status`` (status_view.py); ``now`` defaults to the latest time any method was given."""
        return status_view(self.run, self._now if now is None else now)

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
        _refuse_start(self.run)
        previous = copy_state(self.state)
        chosen = check_steps(self.settings.steps if steps is None else steps)
        interval = None if step_interval is None else check_step_interval(step_interval)
        snapshot_id = self.applier.begin(self.name)
        try:
            at_start = self.applier.snapshot_files(snapshot_id)
        except CanaryError:
            at_start = {}  # the restore will say what is wrong with the snapshot
        self.run.state = RolloutState(
            name=self.name, state=State.PROGRESSING, step_index=0,
            steps=tuple(percent_text(s) for s in chosen), canary_percent="0",
            snapshot_id=snapshot_id, started_at=now, message="starting", upstream=self.settings.upstream,
            expected_files=dict(at_start), step_interval=interval,
        )
        self.journal.forget_checks()
        self.gating.forget()
        self.run.record("start", now, snapshot_id=snapshot_id, steps=list(self.state.steps), step_interval=interval,
                        effective_step_interval=self.step_interval, on_success=self.settings.on_success)
        if self.gating.waiting("pre_rollout", now, self.gates) is not None:
            # The first step waits for the gate; checks (and protection) run meanwhile.
            self.state.step_started_at = now
            self.run.save(now)
            return
        self.mover.move(now, 0, manual=True, revert_to=previous)

    def check(self, now: float, due: bool) -> Optional[Verdict]:
        """The daemon loop's turn for this rollout: act on a check judged during a step change, or a ``due`` one.

        See step_checks.py for which. Returns the verdict acted on, or None.
        Raises StateError like :meth:`tick`.
        """
        observed = self.checks.take(due, self.state.failure_streak >= self.failure_threshold)
        if observed is None and not due:
            return None
        return self.tick(now, observed)

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
            self.restorer.settle(now)  # owed since a BusyError
            return None
        if st.state not in ACTIVE_STATES:
            return None
        if st.step_started_at is None:
            # A step change left in flight by a BusyError during recovery: settle it first.
            self.recovery.settle_step_change(now)
            return None
        # Between step changes too: someone's edit pauses the rollout at once, not at the next step.
        self.check_drift(now)
        self.check_log(now)
        if verdict is None:
            verdict = self.judging.judge(now, self.extra_checks)
        if st.failure_streak >= self.failure_threshold:
            checks = "a failed check" if st.failure_streak == 1 else f"{st.failure_streak} consecutive failed checks"
            self.restorer.restore(now, State.ROLLED_BACK, f"{checks} (failure_threshold {self.failure_threshold}): "
                                  f"{verdict.reason}", "rollback")
            return verdict
        if st.state == State.PROGRESSING and st.gate == "pre_rollout":
            if self.gating.waiting("pre_rollout", now, self.gates) is None:
                st.gate = None  # opened (or no longer configured): the first step now
                self.mover.move(now, 0, manual=False, revert_to=copy_state(st))
        elif (st.state == State.PROGRESSING and verdict.verdict == PASS
                and now - st.step_started_at >= self.step_interval):
            self.progress.advance(now, verdict, self.gates)
        elif st.state == State.PROGRESSING and verdict.verdict == INCONCLUSIVE:
            self.progress.give_up_waiting(now, verdict)
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
        changed = changed_files(st.expected_files, seen)
        if not changed:
            return False
        self.run.pause(now, self.run.drift_reason(seen, changed), "drift")
        return True

    def check_log(self, now: float) -> bool:
        """Pause a progressing rollout (between step changes) whose access log mostly fails to parse; True if it paused.

        Its figures would read as "no traffic" while the canary may be
        failing. Raises StateError when the pause cannot be saved.
        """
        st = self.state
        if st.state != State.PROGRESSING or st.step_started_at is None or self.log_trouble is None:
            return False
        reason = self.log_trouble()
        if reason is None:
            return False
        self.run.pause(now, f"{reason}; resume once it does", "log_unparsed")
        return True

    def observe(self, now: float) -> Optional[Verdict]:
        """Run the checks and count their verdict, but change nothing on nginx (None when not active).

        For the daemon to keep its check cadence while a step change of this
        (or another) rollout is under way on its worker thread; the next
        :meth:`check` acts on it (step_checks.py). Raises StateError when
        the state cannot be saved.
        """
        self._now = now
        if self.state.state not in ACTIVE_STATES:
            return None
        verdict = self.judging.judge(now, self.extra_checks)
        self.checks.observed(verdict)
        return verdict

    def pause(self, now: float, reason: Optional[str] = None) -> None:
        """Stop stepping (checks and automatic rollback go on). Raises BadInputError unless progressing."""
        self._now = now
        if self.state.state != State.PROGRESSING:
            raise BadInputError(f"rollout {self.name!r} is {self.state.state}, "
                                "only a progressing rollout can be paused")
        self.run.pause(now, reason or "paused by the operator", "pause")

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
        changed = changed_files(st.expected_files, files)
        if changed and st.gate == "pre_rollout":
            st.expected_files = files  # no step of ours is on them yet: the edit is simply taken
        elif changed:
            self.run.record("resume", now, changed_outside=changed)
            self.mover.move(now, st.step_index, manual=True, revert_to=copy_state(st))
            return
        st.state = State.PROGRESSING
        st.paused_reason = None
        st.step_started_at = now
        st.message = f"at {self.run.label()}: resumed, bake time restarted"
        self.run.save(now)
        self.run.record("resume", now, changed_outside=changed)

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
        self.run.record("promote", now, full=full, gate=st.gate)
        waiting_first = st.gate == "pre_rollout"
        st.gate = None  # a manual promote overrides any gate
        if waiting_first and not full:
            self.mover.move(now, 0, manual=True, revert_to=copy_state(st))
        elif st.step_index >= last or (full and self.settings.on_success == "restore"):
            self.mover.complete(now, "promoted by the operator", manual=True)
        elif full:
            self.mover.move(now, last, manual=True, revert_to=copy_state(st))
            self.mover.complete(now, "promoted to 100 % by the operator", manual=True)
        else:
            self.mover.move(now, st.step_index + 1, manual=True, revert_to=copy_state(st))

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
        error = self.restorer.restore(now, State.ABORTED, reason or "aborted by the operator", "abort")
        if error is not None:
            raise error

    def recover(self, now: float) -> Optional[str]:
        """Reconcile the saved state with the files after a daemon start (recovery.py).

        Call once, after the transaction journal's recovery. Returns a
        one-line account of what was done, or None when there was nothing to
        do. Raises StateError when the state cannot be saved.
        """
        self._now = now
        account = self.recovery.recover(now)
        if self.state.state in ACTIVE_STATES and self.judging.since is None:
            self.judging.begin_step(now)  # the daemon saw none of the traffic while it was down
        return account

    # -- transitions -------------------------------------------------------------------


def _refuse_start(run: Run) -> None:
    """Raises BadInputError when the run cannot start: it is active, or still owes a restore."""
    st = run.state
    if st.state in ACTIVE_STATES:
        raise BadInputError(f"rollout {run.name!r} is already {st.state} at {run.label()}; "
                            "abort it (or let it finish) before starting again")
    if st.state not in STARTABLE_STATES:
        raise BadInputError(f"rollout {run.name!r} failed and still owes a restore of snapshot "
                            f"{st.snapshot_id}: fix the cause and run abort to retry it")
    if st.snapshot_id is not None:
        raise BadInputError(f"rollout {run.name!r} is {st.state} but still restoring snapshot "
                            f"{st.snapshot_id} (retried at every check); start it again once restored")
