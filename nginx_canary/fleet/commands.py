"""An operator's command on the fleet's rollout (from any host): the plan it turns into, or why not.

Pure: the caller reads the plan, calls one of these, and writes the result
with compare-and-swap (retrying on a race with the coordinator). Each raises
:class:`~nginx_canary.errors.StateError` when the rollout's state does not
allow the command, with the one-line reason the CLI prints.
"""

from __future__ import annotations

import uuid
from fractions import Fraction
from typing import Optional, Sequence

from nginx_canary.domain import State
from nginx_canary.errors import StateError
from nginx_canary.fleet.plan import Plan

ACTIVE = (State.PROGRESSING, State.PAUSED)


def start(current: Optional[Plan], rollout: str, steps: Sequence[Fraction], hosts: Sequence[str], now: float,
          who: str, run_id: Optional[str] = None) -> Plan:
    """A new run at its first step on ``hosts`` (the live members with the fleet's settings)."""
    if current is not None and current.state in ACTIVE:
        raise StateError(f"rollout {rollout!r} is already {current.state.value} in the fleet "
                         f"(step {current.step_index + 1}/{len(current.steps)}); abort it first")
    if not hosts:
        raise StateError(f"rollout {rollout!r}: no live host of the fleet has it configured as this host has")
    if not steps:
        raise StateError(f"rollout {rollout!r}: no steps")
    return Plan(rollout=rollout, run=run_id or uuid.uuid4().hex, seq=1 if current is None else current.seq + 1,
                state=State.PROGRESSING, steps=tuple(steps), step_index=0, hosts=tuple(sorted(hosts)),
                started_at=now, updated_at=now, reason=f"started from host {who}")


def pause(current: Optional[Plan], rollout: str, now: float, who: str, reason: Optional[str] = None) -> Plan:
    plan = _active(current, rollout, "pause")
    if plan.state == State.PAUSED:
        raise StateError(f"rollout {rollout!r} is already paused: {plan.reason}")
    return plan.moved(now, state=State.PAUSED, reason=reason or f"paused from host {who}")


def resume(current: Optional[Plan], rollout: str, now: float, who: str) -> Plan:
    """Back to progressing: every host reports the step again and its bake time starts over."""
    plan = _active(current, rollout, "resume")
    if plan.state != State.PAUSED:
        raise StateError(f"rollout {rollout!r} is not paused")
    return plan.moved(now, state=State.PROGRESSING, seq=plan.seq + 1, barrier_at=None, looked=False,
                      step_started_at=now, reason=f"resumed from host {who}")


def promote(current: Optional[Plan], rollout: str, now: float, who: str, full: bool = False) -> Plan:
    """The next step at once (``full``: the last), or promoted when this is the last step."""
    plan = _active(current, rollout, "promote")
    last = len(plan.steps) - 1
    if plan.step_index >= last:
        return plan.moved(now, state=State.PROMOTED, seq=plan.seq + 1, reason=f"promoted from host {who}")
    index = last if full else plan.step_index + 1
    return plan.moved(now, state=State.PROGRESSING, step_index=index, seq=plan.seq + 1, barrier_at=None,
                      looked=False, step_started_at=now, reason=f"moved on to step {index + 1} from host {who}")


def abort(current: Optional[Plan], rollout: str, now: float, who: str, reason: Optional[str] = None) -> Plan:
    """Every host restores its snapshot."""
    plan = _active(current, rollout, "abort")
    return plan.moved(now, state=State.ABORTED, seq=plan.seq + 1, reason=reason or f"aborted from host {who}")


def _active(current: Optional[Plan], rollout: str, verb: str) -> Plan:
    if current is None:
        raise StateError(f"cannot {verb} rollout {rollout!r}: the fleet has never run it")
    if current.state not in ACTIVE:
        raise StateError(f"cannot {verb} rollout {rollout!r}: its last run is {current.state.value} "
                         f"({current.reason})")
    return current
