"""One rollout's bookkeeping: saving its state, and each event as a log line, a history line and to listeners.

Bookkeeping never blocks a rollback: a history line that cannot be written,
or a listener that fails, is logged and the rollout goes on (the state file
is the truth). A failed save of the state is the caller's to decide on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from nginx_canary.errors import StateError
from nginx_canary.rollout.verdict import FAIL
from nginx_canary.rollout.store import RolloutState, StateStore

# Every line about a rollout carries one logger name, whichever of its modules writes it.
log = logging.getLogger("nginx_canary.rollout.machine")

#: At most one history line per this many seconds for checks that neither fail nor change the verdict.
CHECK_HISTORY_EVERY = 60.0

#: ``listener(event, record)``, called after each history record; ``record`` is the history line's data.
Listener = Callable[[str, Dict[str, Any]], None]


class Journal:
    """Saves and records for rollout ``name``. ``clock``, when given, stamps finished changes (see finished_at)."""

    def __init__(self, name: str, store: StateStore, *, history_every: float = CHECK_HISTORY_EVERY,
                 clock: Optional[Callable[[], float]] = None) -> None:
        self.name = name
        self.store = store
        self.history_every = history_every
        self.clock = clock
        #: Metrics and webhooks. A listener must return quickly; its errors are logged, never raised.
        self.listeners: List[Listener] = []
        self._last_check: Optional[Tuple[str, float]] = None  # (verdict, at) of the last recorded check

    def save(self, state: RolloutState, now: float) -> None:
        """Stamp and save the state. Raises StateError when it cannot be written."""
        state.updated_at = now
        self.store.save(state)

    def finished_at(self, now: float) -> float:
        """When a step change or restore begun at ``now`` finished, so the history shows how long a reload took."""
        return max(now, self.clock()) if self.clock is not None else now

    def forget_checks(self) -> None:
        """A new run: its first check is recorded whatever the last run's was."""
        self._last_check = None

    def wants_check(self, verdict: str, now: float) -> bool:
        """Whether a check with this verdict goes into the history: every failure and change, else one a minute."""
        last = self._last_check
        if verdict == FAIL or last is None or last[0] != verdict or now - last[1] >= self.history_every:
            self._last_check = (verdict, now)
            return True
        return False

    def record(self, state: RolloutState, label: str, event: str, now: float, *, level: int = logging.INFO,
               **detail: Any) -> None:
        """Log ``event``, append it to the history and tell the listeners; never raises."""
        if event == "check":
            verdict = detail["verdict"]
            log.log(level, "rollout %s: check %s at %s: %s", self.name, verdict.verdict, label, verdict.reason)
        elif "error" in detail:
            log.log(level, "rollout %s: %s: %s (%s)", self.name, event, state.message, detail["error"])
        else:
            log.log(level, "rollout %s: %s: %s", self.name, event, state.message)
        record: Optional[Dict[str, Any]] = None
        try:
            record = self.store.append_history(self.name, event, rollout=state, at=now, message=state.message,
                                               **detail)
        except StateError as exc:
            log.error("rollout %s: cannot record %r in the history: %s", self.name, event, exc)
        if not self.listeners:
            return
        if record is None:
            plain = {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in detail.items()}
            record = {"time": now, "event": event, "state": state.state, "step": state.step_index,
                      "canary_percent": state.canary_percent, "detail": {"message": state.message, **plain}}
        for listener in list(self.listeners):
            try:
                listener(event, record)
            except Exception:  # noqa: BLE001 - observers must never break a rollout
                log.exception("rollout %s: a listener failed on %r", self.name, event)
