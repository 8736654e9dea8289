"""What the fleet's etcd holds for one rollout: the plan every host follows, each host's report and figures.

The plan is written by the coordinator (and by a command from any host),
always with compare-and-swap on its mod revision; a host's report and
figures are written only by that host, under its lease, so they vanish with
it. Every record is JSON with a format number; reading one that is not
what this module writes raises :class:`~nginx_canary.errors.FleetError`
naming the key, so a stranger's or a newer release's data never steers nginx.

Keys, relative to the fleet's prefix (``/nginx-canary/FLEET/``):

``coordinator``                      the coordinator's host id (under its lease)
``members/HOST``                     a live daemon (under its lease): its settings' digests
``rollouts/NAME/plan``               :class:`Plan`
``rollouts/NAME/reports/HOST``       :class:`HostReport`
``rollouts/NAME/figures/HOST``       :class:`HostFigures`
``rollouts/NAME/verdict``            the coordinator's last verdicts, pooled and per host (for status only)
``rollouts/NAME/told``               the plan as the fleet's events last told it (each event told once)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any, Dict, Optional, Tuple

from nginx_canary.domain import State
from nginx_canary.errors import FleetError
from nginx_canary.logs.window import Stats

FORMAT = 1
COORDINATOR_KEY = "coordinator"
MEMBERS = "members/"

#: The plan's states: a run goes PROGRESSING (<-> PAUSED) and ends PROMOTED, ROLLED_BACK or ABORTED.
PLAN_STATES = (State.PROGRESSING, State.PAUSED, State.PROMOTED, State.ROLLED_BACK, State.ABORTED)
#: The states in which every host restores its own snapshot.
RESTORING = (State.ROLLED_BACK, State.ABORTED)

#: A host report's status.
APPLIED, FAILED, RESTORED, RESTORE_FAILED, PROMOTED = "applied", "failed", "restored", "restore_failed", "promoted"
REPORT_STATUSES = (APPLIED, FAILED, RESTORED, RESTORE_FAILED, PROMOTED)


def member_key(host: str) -> str:
    return f"{MEMBERS}{host}"


def plan_key(rollout: str) -> str:
    return f"rollouts/{rollout}/plan"


def reports_prefix(rollout: str) -> str:
    return f"rollouts/{rollout}/reports/"


def figures_prefix(rollout: str) -> str:
    return f"rollouts/{rollout}/figures/"


def verdict_key(rollout: str) -> str:
    return f"rollouts/{rollout}/verdict"


def told_key(rollout: str) -> str:
    return f"rollouts/{rollout}/told"


@dataclass(frozen=True)
class Plan:
    """The fleet's rollout: which step every host applies, and why.

    ``seq`` grows at every change hosts must act on (a new step, a restore, a
    resume); a host reports the ``seq`` it acted on, which is what the barrier
    counts. ``barrier_at``: when every live host had applied ``seq`` (the bake
    time counts from then), None before. ``hosts``: the hosts taking part.
    ``looked``: the step's planned look (see rollout/judge.py) is done.
    ``step_started_at``: when the current step was decided (``max_step_wait`` counts from then while hosts
    have not all applied it; None: ``started_at``).
    ``digest``: of the rollout settings it was started with (see fleet/members.py): only hosts with the same
    settings take part.
    """

    rollout: str
    run: str
    seq: int
    state: State
    steps: Tuple[Fraction, ...]
    step_index: int
    hosts: Tuple[str, ...]
    started_at: float
    updated_at: float
    barrier_at: Optional[float] = None
    looked: bool = False
    reason: str = ""
    digest: str = ""
    step_started_at: Optional[float] = None

    @property
    def percent(self) -> Fraction:
        return self.steps[self.step_index]

    def moved(self, now: float, **changes: Any) -> "Plan":
        """This plan changed as ``changes`` say, stamped ``now``."""
        return replace(self, updated_at=now, **changes)

    def to_json(self) -> bytes:
        data = asdict(self)
        data.update(format=FORMAT, state=self.state.value, steps=[str(s) for s in self.steps], hosts=list(self.hosts))
        return json.dumps(data, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, key: str) -> "Plan":
        """Raises FleetError naming ``key`` when ``raw`` is not a plan of this format."""
        data = _object(raw, key)
        try:
            steps = tuple(Fraction(s) for s in _typed(data, "steps", list, key))
            state = State(data["state"])
            plan = cls(rollout=_typed(data, "rollout", str, key), run=_typed(data, "run", str, key),
                       seq=_typed(data, "seq", int, key), state=state, steps=steps,
                       step_index=_typed(data, "step_index", int, key),
                       hosts=tuple(_typed(data, "hosts", list, key)),
                       started_at=_number(data, "started_at", key), updated_at=_number(data, "updated_at", key),
                       barrier_at=None if data.get("barrier_at") is None else _number(data, "barrier_at", key),
                       looked=_typed(data, "looked", bool, key) if "looked" in data else False,
                       reason=str(data.get("reason", "")), digest=str(data.get("digest", "")),
                       step_started_at=None if data.get("step_started_at") is None
                       else _number(data, "step_started_at", key))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise FleetError(f"etcd key {key}: not a rollout plan ({exc})") from None
        if (state not in PLAN_STATES or not steps or not 0 <= plan.step_index < len(steps) or plan.seq < 1
                or not all(isinstance(h, str) for h in plan.hosts) or not all(0 < s <= 100 for s in steps)):
            raise FleetError(f"etcd key {key}: not a rollout plan (state, steps, step or hosts out of range)")
        return plan


@dataclass(frozen=True)
class HostReport:
    """What one host did about the plan's ``seq`` of run ``run``: ``status`` is one of REPORT_STATUSES."""

    host: str
    run: str
    seq: int
    status: str
    percent: str
    at: float
    detail: str = ""

    def to_json(self) -> bytes:
        return json.dumps(dict(asdict(self), format=FORMAT), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, key: str) -> "HostReport":
        """Raises FleetError naming ``key`` when ``raw`` is not a host report of this format."""
        data = _object(raw, key)
        try:
            report = cls(host=_typed(data, "host", str, key), run=_typed(data, "run", str, key),
                         seq=_typed(data, "seq", int, key), status=_typed(data, "status", str, key),
                         percent=_typed(data, "percent", str, key), at=_number(data, "at", key),
                         detail=str(data.get("detail", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise FleetError(f"etcd key {key}: not a host report ({exc})") from None
        if report.status not in REPORT_STATUSES:
            raise FleetError(f"etcd key {key}: unknown status {report.status!r}")
        return report


@dataclass
class HostFigures:
    """One host's canary and stable figures since it applied the plan's ``seq`` of run ``run``."""

    host: str
    run: str
    seq: int
    since: float
    at: float
    canary: Stats = field(default_factory=Stats)
    stable: Stats = field(default_factory=Stats)

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "host": self.host, "run": self.run, "seq": self.seq, "since": self.since,
                           "at": self.at, "canary": self.canary.to_wire(), "stable": self.stable.to_wire()},
                          sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, key: str) -> "HostFigures":
        """Raises FleetError naming ``key`` when ``raw`` is not a host's figures of this format."""
        data = _object(raw, key)
        try:
            return cls(host=_typed(data, "host", str, key), run=_typed(data, "run", str, key),
                       seq=_typed(data, "seq", int, key), since=_number(data, "since", key),
                       at=_number(data, "at", key),
                       canary=Stats.from_wire(data["canary"]), stable=Stats.from_wire(data["stable"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FleetError(f"etcd key {key}: not a host's figures ({exc})") from None


def is_format(value: Any) -> bool:
    """``value`` is this release's format number (``true`` is not: JSON's true equals 1 in Python)."""
    return value == FORMAT and not isinstance(value, bool)


def _object(raw: bytes, key: str) -> Dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FleetError(f"etcd key {key}: not JSON") from None
    if not isinstance(data, dict):
        raise FleetError(f"etcd key {key}: not a JSON object")
    if not is_format(data.get("format")):
        raise FleetError(f"etcd key {key}: format {data.get('format')!r}, this release reads format {FORMAT} "
                         f"(written by a newer nginx-canary?)")
    return data


def _number(data: Dict[str, Any], name: str, key: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FleetError(f"etcd key {key}: {name} must be a finite number, not {value!r}")
    return float(value)


def _typed(data: Dict[str, Any], name: str, kind: type, key: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FleetError(f"etcd key {key}: {name} must be a {kind.__name__}, not {value!r}")
    return value
