"""The daemon's side of a fleet: the node built from the ``fleet`` section, its ticks, its commands and status.

With a ``fleet`` section every configured rollout is the fleet's: the
commands ``start|pause|resume|promote|abort`` act on the plan in etcd (from
any host), this host's own state machine stays idle, and each rollout's
:class:`~nginx_canary.fleet.agent.HostAgent` steers this host's nginx
through the same applier (the config engine's transaction, off the loop) and
the same access-log traffic a lone rollout uses.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional

from nginx_canary.config.model import FleetSettings
from nginx_canary.daemon.runtime import RolloutRuntime
from nginx_canary.errors import BadInputError, FleetError
from nginx_canary.fleet.agent import HostAgent, state_file
from nginx_canary.fleet.node import EventSink, FleetNode
from nginx_canary.fleet.plan import Plan
from nginx_canary.rollout.store import RolloutState
from nginx_canary.fleet.store import FleetStore
from nginx_canary.rollout.judge import judge

log = logging.getLogger(__name__)

#: Seconds between two fleet ticks (reads of etcd): the barrier and a fleet-wide rollback move this fast.
FLEET_TICK = 0.25
#: etcd calls wait at most this long, so a dead etcd never holds the loop for more than a few of them.
ETCD_TIMEOUT = 1.0


def read_password(settings: FleetSettings) -> Optional[str]:
    """The etcd password from the settings or their ``password_file``. Raises BadInputError when unreadable."""
    if settings.password_file is None:
        return settings.password
    try:
        with open(settings.password_file, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"fleet.password_file {settings.password_file}: cannot read it ({exc})") from None


def open_fleet(settings: FleetSettings, runtimes: Mapping[str, RolloutRuntime], state_dir: str) -> FleetNode:
    """This daemon's node in the fleet, with one agent per rollout. Raises FleetError, BadInputError, StateError."""
    store = FleetStore(settings.etcd, settings.name, timeout=ETCD_TIMEOUT, ca_cert=settings.ca, cert=settings.cert,
                       key=settings.key, user=settings.user, password=read_password(settings))
    agents = {name: HostAgent(settings.host, runtime.rollout.settings, runtime.rollout.run.applier, runtime.traffic,
                              state_file(state_dir, name), judge)
              for name, runtime in runtimes.items()}
    return FleetNode(store, settings.host, agents, ttl=int(settings.lease_ttl), on_host_lost=settings.on_host_lost,
                     judge=judge, on_event=history_sink(runtimes))


def history_sink(runtimes: Mapping[str, RolloutRuntime]) -> EventSink:
    """Fleet events into each rollout's own history, log and listeners (webhooks, metrics).

    The coordinator's plan events carry the webhooks' names (``step``, ``promoted``, ...), so the fleet's
    webhooks fire once, from whichever daemon coordinates; a host's own reports are ``host_*`` events,
    kept in that host's history (and shown by ``history`` and the report) but sent to no webhook.
    """
    def record(name: str, event: str, now: float, plan: Optional[Plan], detail: Dict[str, Any]) -> None:
        runtime = runtimes.get(name)
        if runtime is None:
            return
        state = RolloutState(name=name)
        if plan is not None:
            state = RolloutState(name=name, state=plan.state, step_index=plan.step_index,
                                 steps=tuple(str(s) for s in plan.steps), canary_percent=str(plan.percent),
                                 started_at=plan.started_at, message=f"fleet: {plan.reason}")
        label = f"step {state.step_index + 1}/{len(state.steps)}" if state.steps else "-"
        runtime.rollout.run.journal.record(state, label, event, now, **detail)
    return record


def fleet_command(node: FleetNode, verb: str, name: str, now: float, args: Dict[str, Any],
                  steps: Optional[List[Fraction]]) -> None:
    """Run an operator's command on the fleet's rollout. Raises StateError, FleetError (etcd unreachable)."""
    if args.get("step_interval") is not None:
        raise BadInputError("--step-interval is the fleet's, set in every host's YAML: it cannot change for one run")
    extra: Dict[str, Any] = {}
    if steps is not None:
        extra["steps"] = steps
    if verb == "promote":
        extra["full"] = bool(args.get("full"))
    if verb in ("pause", "abort") and isinstance(args.get("reason"), str) and args["reason"]:
        extra["reason"] = args["reason"]
    node.command(verb, name, now, **extra)
    node.tick(now)  # act on it here at once rather than at the next tick


def fleet_status(node: FleetNode, name: str, status: Dict[str, Any]) -> Dict[str, Any]:
    """``status`` (the rollout's local status) with the fleet's plan and hosts in place of the idle machine's."""
    try:
        fleet = node.status(name)
    except FleetError as exc:
        status["fleet"] = {"name": node.store.prefix, "host": node.host, "error": str(exc),
                           "cut_off_since": node.cut_off_since}
        return status
    plan = fleet.get("plan")
    fleet.update(host=node.host, coordinating=node.coordinator, cut_off_since=node.cut_off_since)
    status["fleet"] = fleet
    local = node.agents[name].local
    if plan is not None:
        status.update(state=plan["state"], steps=plan["steps"], step=plan["step"] - 1,
                      message=plan["reason"], paused_reason=plan["reason"] if plan["state"] == "paused" else None)
    if local is not None and local.percent is not None:
        status["canary_percent"] = local.percent
    status.pop("time_left_in_step", None)
    status["hosts"] = [{"host": host, "state": row["status"], "canary_percent": row["percent"] or None,
                        "seq": row["seq"], "reported_at": row["at"], "detail": row["detail"],
                        "canary_requests": row["canary_requests"], "last_heartbeat": row["heartbeat"],
                        "last_verdict": row["verdict"]}
                       for host, row in sorted((fleet.get("hosts") or {}).items())]
    return status
