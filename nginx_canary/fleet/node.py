"""One daemon in the fleet: its lease and membership, its agents, and the coordinator's role when it holds it.

:meth:`FleetNode.tick` is called from the daemon's loop (every check
interval); it never blocks longer than the store's timeout per call. A tick:

1. keeps the lease alive (every third of its TTL); a lost lease means a new
   one, a new membership record, and no coordinator role until won again;
2. reads the fleet's members and every rollout's keys (two range reads);
3. lets each rollout's :class:`HostAgent` act on the plan and publishes its
   report and figures (under the lease: they vanish with this daemon);
4. tries to become the coordinator (the ``coordinator`` key, created under
   the lease: exactly one daemon holds it at a time, and it passes on when
   that daemon's lease expires), and as coordinator writes each rollout's
   next plan with compare-and-swap fenced by holding that key, so a deposed
   coordinator's late write never lands.

When etcd cannot be reached the tick judges each rollout on this host's own
figures (:meth:`HostAgent.judge_alone`) and does nothing else: no step is
taken on a plan read before the cut.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from nginx_canary.domain import State
from nginx_canary.errors import FleetError, StateError
from nginx_canary.fleet import commands
from nginx_canary.fleet.agent import HostAgent
from nginx_canary.fleet.decide import Decision, FleetView, decide
from nginx_canary.fleet.members import differences, digest, member_record, read_member, shared_settings
from nginx_canary.fleet.plan import (COORDINATOR_KEY, MEMBERS, HostFigures, HostReport, Plan, figures_prefix,
                                     member_key, plan_key, reports_prefix, told_key, verdict_key)
from nginx_canary.fleet.store import FleetStore, Held, Lease, LeaseLost
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.verdict import Verdict

log = logging.getLogger(__name__)

#: Compare-and-swap attempts of one command before it gives up on a busy plan.
COMMAND_ATTEMPTS = 5
#: Each member's rollouts: ``{host: {rollout: {"digest": ..., "settings": {...}}}}``.
Members = Dict[str, Dict[str, Dict[str, Any]]]

#: The plan as the fleet's events last told it: run, seq, state, step.
Told = Tuple[str, int, str, int]

#: ``on_event(rollout, event, now, plan, detail)``.
EventSink = Callable[[str, str, float, Optional[Plan], Dict[str, Any]], None]

#: Seconds between two writes of unchanged verdicts (a changed verdict is written at once).
VERDICT_EVERY = 2.0


class FleetNode:
    """This host's daemon in the fleet ``store`` names, as ``host``."""

    def __init__(self, store: FleetStore, host: str, agents: Mapping[str, HostAgent], *, ttl: int = 5,
                 on_host_lost: str = "pause", judge: Callable[..., Verdict],
                 on_event: Optional[EventSink] = None) -> None:
        """``on_event(rollout, event, now, plan, detail)`` is told each fleet event this daemon sees first-hand:
        the coordinator's view of every change of a plan (the history's ``start``, ``step``, ``pause``,
        ``resume``, ``promoted``, ``rollback``, ``abort``: once per fleet event, so webhooks fire once) and this
        host's own reports (``host_applied``, ``host_restored``, ...: per host)."""
        self.store = store
        self.host = host
        self.agents = dict(agents)
        self.ttl = ttl
        self.on_host_lost = on_host_lost
        self.judge = judge
        self.lease: Optional[Lease] = None
        self.refreshed_at = 0.0
        self.coordinator = False
        self.cut_off_since: Optional[float] = None
        self.last_error: Optional[str] = None
        self.published_at: Dict[str, float] = {}
        self.refusals: Dict[str, str] = {}
        #: Each rollout's plan as this host last read it (None: the fleet never ran it).
        self.plans: Dict[str, Optional[Plan]] = {}
        #: When the coordinator first missed each host of a plan (see _missing_briefly).
        self.absent_since: Dict[str, float] = {}
        #: What is wrong with each rollout's records or files now (status shows it); absent when all is well.
        self.problems: Dict[str, str] = {}
        self._previous_problems: Dict[str, str] = {}
        #: The coordinator's last verdicts per rollout: {"at", "fleet": [verdict, reason], "hosts": {...}}.
        self.verdicts: Dict[str, Dict[str, Any]] = {}
        self._verdict_written: Dict[str, Tuple[float, str]] = {}
        self.shared = {name: shared_settings(agent.settings) for name, agent in self.agents.items()}
        self.digests = {name: digest(value) for name, value in self.shared.items()}
        self.events: List[str] = []
        self.on_event = on_event
        #: The plan the coordinator last saw of each rollout (its transitions are the fleet's events).
        self.seen_plans: Dict[str, Optional[Told]] = {}
        self._said: Dict[str, Tuple[str, int, str]] = {}
        #: Parsed reports and figures by key, with the bytes they came from (unchanged bytes: the same object).
        self._parsed: Dict[str, Tuple[bytes, Any]] = {}
        #: Verdicts of this tick's and the last tick's judge calls (see _judge_once).
        self._judged: Dict[Tuple[int, int, float, bool], Tuple[Stats, Stats, Verdict, float]] = {}

    # -- the loop's call -------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One round (see the module's docstring). Never raises FleetError: a cut is recorded and judged alone."""
        self._previous_problems, self.problems = self.problems, {}
        try:
            self._keep_lease(now)
            members, keys = self._read()
            for name, agent in self.agents.items():
                self._each(name, "following the plan", lambda: self._follow(name, agent, keys, members, now))
            self._campaign(keys)
            if self.coordinator:
                for name in self.agents:
                    self._each(name, "coordinating", lambda: self._coordinate(name, keys, members, now))
        except FleetError as exc:
            self._cut_off(now, exc)
            return
        if self.cut_off_since is not None:
            log.warning("fleet: etcd answers again after %.1f s", now - self.cut_off_since)
        self.cut_off_since, self.last_error = None, None

    def close(self, *, leave: bool = True) -> None:
        """Stop taking part: revoke the lease (membership, reports, coordinator role go at once) when ``leave``."""
        if leave and self.lease is not None:
            try:
                self.store.revoke(self.lease)
            except FleetError as exc:
                log.warning("fleet: could not revoke lease on the way out (%s); it expires in %d s", exc, self.ttl)
        self.lease, self.coordinator = None, False

    # -- commands from this host's operator ----------------------------------------------------------------

    def command(self, verb: str, name: str, now: float, **args: Any) -> Plan:
        """``start|pause|resume|promote|abort`` on the fleet's rollout ``name``: the plan written.

        Raises StateError (not allowed now; settings differ), FleetError (etcd), BusyError-like StateError
        when the plan kept changing under us.
        """
        if name not in self.agents:
            raise StateError(f"rollout {name!r} is not configured on this host")
        for _ in range(COMMAND_ATTEMPTS):
            entry = self.store.get(plan_key(name))
            current = None if entry is None else Plan.from_json(entry.value, plan_key(name))
            held = self.agents[name].unsettled()
            if held is not None and (current is None or current.run != held.run):
                if verb != "abort":
                    raise StateError(f"rollout {name!r}: this host still holds run {held.run[:8]} ({held.percent} %) "
                                     f"whose plan etcd no longer has; 'abort {name}' restores it first")
                current = self._lost_run(name, held, now)
            plan = self._command_plan(verb, name, current, now, args)
            if self.store.swap(plan_key(name), plan.to_json(), 0 if entry is None else entry.mod_revision):
                self.events.append(f"{name}: {verb} from {self.host}: {plan.reason}")
                return plan
        raise StateError(f"rollout {name!r}: the fleet's plan kept changing; try {verb} again")

    def _lost_run(self, name: str, held: Any, now: float) -> Plan:
        """A paused stand-in for the run whose plan etcd lost, so that ``abort`` can end it on every host."""
        return Plan(rollout=name, run=held.run, seq=held.seq + 1, state=State.PAUSED,
                    steps=tuple(self.agents[name].settings.steps), step_index=0, hosts=(self.host,),
                    started_at=now, updated_at=now, reason="etcd lost this run's plan", digest=self.digests[name])

    def _command_plan(self, verb: str, name: str, current: Optional[Plan], now: float,
                      args: Mapping[str, Any]) -> Plan:
        if verb == "start":
            hosts = self._matching_hosts(name)
            steps = args.get("steps") or self.agents[name].settings.steps
            plan = commands.start(current, name, steps, hosts, now, self.host)
            return plan.moved(now, digest=self.digests[name])
        if current is not None and current.digest and current.digest != self.digests[name]:
            raise StateError(f"rollout {name!r}: this host's settings differ from the fleet's run: "
                             f"{self.refusals.get(name, 'see status')}")
        if verb == "pause":
            return commands.pause(current, name, now, self.host, args.get("reason"))
        if verb == "resume":
            return commands.resume(current, name, now, self.host)
        if verb == "promote":
            return commands.promote(current, name, now, self.host, bool(args.get("full")))
        if verb == "abort":
            return commands.abort(current, name, now, self.host, args.get("reason"))
        raise StateError(f"unknown fleet command {verb!r}")

    def _matching_hosts(self, name: str) -> List[str]:
        """The live hosts with this rollout's settings; StateError naming a live host whose settings differ."""
        listing = self.store.get_prefix(MEMBERS)
        hosts: List[str] = []
        for entry in listing.entries:
            rollouts = read_member(entry.value, entry.key)
            theirs = rollouts.get(name)
            host = entry.key[len(MEMBERS):]
            if theirs is None:
                continue
            if theirs["digest"] != self.digests[name]:
                raise StateError(f"rollout {name!r}: host {host}'s settings differ from this host's: "
                                 + "; ".join(differences(theirs["settings"], self.shared[name])))
            hosts.append(host)
        return hosts

    # -- status ------------------------------------------------------------------------------------------

    def status(self, name: str) -> Dict[str, Any]:
        """The fleet's view of rollout ``name``: plan, coordinator, and each host's report. Raises FleetError."""
        listing = self.store.get_prefix(f"rollouts/{name}/")
        coordinator = self.store.get(COORDINATOR_KEY)
        keys = {e.key: e.value for e in listing.entries}
        plan, reports, figures = _parse_rollout(name, keys)
        verdicts = _read_verdicts(keys.get(verdict_key(name)))
        return {"rollout": name, "coordinator": None if coordinator is None else coordinator.value.decode(),
                "plan": None if plan is None else {
                    "state": plan.state.value, "step": plan.step_index + 1, "steps": [str(s) for s in plan.steps],
                    "percent": str(plan.percent), "seq": plan.seq, "hosts": list(plan.hosts),
                    "barrier_at": plan.barrier_at, "reason": plan.reason},
                "hosts": {h: {"status": r.status, "percent": r.percent, "seq": r.seq, "at": r.at, "detail": r.detail,
                              "canary_requests": figures[h].canary.requests if h in figures else None,
                              "heartbeat": figures[h].at if h in figures else None,
                              "verdict": verdicts.get("hosts", {}).get(h)}
                          for h, r in sorted(reports.items())},
                "verdict": verdicts.get("fleet"), "verdict_at": verdicts.get("at"),
                "refused": self.refusals.get(name), "problem": self.problems.get(name)}

    # -- inside --------------------------------------------------------------------------------------------

    def _each(self, name: str, doing: str, work: Callable[[], object]) -> None:
        """One rollout's part of the tick: its own trouble (a record etcd holds that cannot be read, a state
        file that cannot be written) is logged and held against it alone. etcd's own failures propagate."""
        try:
            work()
        except StateError as exc:
            self._problem(name, f"{doing}: {exc}")
        except PlanUnreadable as exc:
            self._problem(name, f"{doing}: {exc}; holding this host's current split until a readable plan is written")

    def _problem(self, name: str, text: str) -> None:
        if self._previous_problems.get(name) != text and self.problems.get(name) != text:
            log.error("fleet: rollout %s: %s", name, text)
        self.problems[name] = f"{self.problems[name]}; {text}" if name in self.problems else text

    def _keep_lease(self, now: float) -> None:
        if self.lease is not None and now - self.refreshed_at < self.ttl / 3:
            return
        if self.lease is not None:
            try:
                self.store.refresh(self.lease)
                self.refreshed_at = now
                return
            except LeaseLost:
                log.warning("fleet: this host's lease expired: joining again")
                self.lease, self.coordinator = None, False
        self.lease = self.store.grant(self.ttl)
        self.refreshed_at = now
        self.store.put(member_key(self.host), member_record(self.host, {n: a.settings for n, a in self.agents.items()}),
                       lease=self.lease)
        for agent in self.agents.values():
            if agent.local is not None:
                agent.local.reported = False  # the old lease took our reports with it

    def _read(self) -> Tuple[Optional[Members], Dict[str, bytes]]:
        """What this tick needs from etcd: the coordinator reads every member and every rollout key; another
        host only its rollouts' plans (what every host reads grows with the fleet, not with its square)."""
        keys: Dict[str, bytes] = {}
        members: Optional[Members] = None
        if self.coordinator:
            members = self._members()
            keys = {e.key: e.value for e in self.store.get_prefix("rollouts/").entries}
        else:
            for name in self.agents:
                entry = self.store.get(plan_key(name))
                if entry is not None:
                    keys[entry.key] = entry.value
        coordinator = self.store.get(COORDINATOR_KEY)
        keys[COORDINATOR_KEY] = b"" if coordinator is None else str(coordinator.lease).encode()
        return members, keys

    def _members(self) -> Members:
        """Every member's record; one that cannot be read is left out (that host does not take part) and logged."""
        found: Members = {}
        for entry in self.store.get_prefix(MEMBERS).entries:
            try:
                found[entry.key[len(MEMBERS):]] = read_member(entry.value, entry.key)
            except FleetError as exc:
                for name in self.agents:
                    self._problem(name, str(exc))
        return found

    def _follow(self, name: str, agent: HostAgent, keys: Mapping[str, bytes], members: Optional[Members],
                now: float) -> None:
        plan = _read_plan(name, keys)
        self.plans[name] = plan
        held = agent.unsettled()
        if held is not None and (plan is None or plan.run != held.run):
            # etcd lost the plan (its data wiped?), or a new run began without this host seeing its own end:
            # nothing is stepped on what this host cannot see; abort (which knows this run) restores it.
            self._problem(name, f"etcd holds no plan for run {held.run[:8]} this host applied a step of "
                                f"({held.percent} %): etcd's data lost? This host keeps its split; "
                                f"'nginx-canary abort {name}' restores every host of that run")
            return
        if plan is not None and plan.digest and plan.digest != self.digests[name]:
            members = self._members() if members is None else members
            theirs = next((m[name]["settings"] for m in members.values()
                           if name in m and m[name]["digest"] == plan.digest), None)
            why = "; ".join(differences(self.shared[name], theirs)) if theirs else "digest differs"
            if self.refusals.get(name) != why:
                log.error("fleet: rollout %s: this host does not take part: its settings differ from the run's: %s",
                          name, why)
            self.refusals[name] = why
            return
        self.refusals.pop(name, None)
        report = agent.converge(plan, now)
        if report is not None:
            self._publish_report(name, agent, report, plan)
        interval = agent.settings.analysis.interval
        if now - self.published_at.get(name, 0.0) >= interval:
            figures = agent.figures(now)
            if figures is not None:
                self.store.put(f"{figures_prefix(name)}{self.host}", figures.to_json(), lease=self.lease)
                self.published_at[name] = now

    def _publish_report(self, name: str, agent: HostAgent, report: HostReport, plan: Optional[Plan]) -> None:
        self.store.put(f"{reports_prefix(name)}{self.host}", report.to_json(), lease=self.lease)
        agent.reported(report)
        self.events.append(f"{name}: {self.host} {report.status} seq {report.seq} {report.detail}".rstrip())
        said = (report.run, report.seq, report.status)
        if self._said.get(name) != said:  # a report sent again (a new lease) is not a new event
            self._said[name] = said
            self._tell(name, f"host_{report.status}", report.at, plan,
                       {"host": self.host, "percent": report.percent, "reason": report.detail})

    def _tell(self, name: str, event: str, now: float, plan: Optional[Plan], detail: Dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(name, event, now, plan, detail)
        except Exception:  # noqa: BLE001 - an observer must never stop the fleet's round
            log.exception("fleet: rollout %s: recording %r failed", name, event)

    def _transitions(self, name: str, plan: Plan, now: float, keys: Mapping[str, bytes]) -> None:
        """The coordinator tells what changed in the plan since the fleet's events were last told.

        What was last told is kept in etcd (``rollouts/NAME/told``), so a new coordinator goes on where the
        last one stopped: each fleet event is told once (twice at worst, when a coordinator dies between
        telling and writing it down).
        """
        now_key = (plan.run, plan.seq, plan.state.value, plan.step_index)
        if name in self.seen_plans:
            told = self.seen_plans[name]
        else:
            told = _read_told(keys.get(told_key(name)))
        self.seen_plans[name] = now_key
        if told == now_key:
            return
        detail: Dict[str, Any] = {"reason": plan.reason, "hosts": list(plan.hosts), "fleet": True}
        if told is None or told[0] != plan.run:
            self._tell(name, "start", now, plan, dict(detail, steps=[str(s) for s in plan.steps]))
            if plan.state != State.PROGRESSING:
                told = (plan.run, plan.seq, State.PROGRESSING.value, plan.step_index)
        if told is not None and told[0] == plan.run:
            if plan.state.value != told[2]:
                event = {State.PAUSED: "pause", State.PROMOTED: "promoted", State.ROLLED_BACK: "rollback",
                         State.ABORTED: "abort"}.get(plan.state, "resume")
                self._tell(name, event, now, plan, detail)
            elif plan.step_index != told[3]:
                self._tell(name, "step", now, plan, detail)
        self.store.put(told_key(name), json.dumps(list(now_key)))

    def _campaign(self, keys: Mapping[str, bytes]) -> None:
        assert self.lease is not None
        holder = keys.get(COORDINATOR_KEY, b"")
        if holder == str(self.lease.id).encode():
            self.coordinator = True
            return
        if holder:
            self.coordinator = False
            return
        won = self.store.create(COORDINATOR_KEY, self.host, lease=self.lease)
        if won and not self.coordinator:
            log.info("fleet: this host (%s) coordinates the fleet", self.host)
            self.events.append(f"{self.host} coordinates")
        self.coordinator = won

    def _coordinate(self, name: str, keys: Mapping[str, bytes], members: Optional[Members],
                    now: float) -> Optional[Decision]:
        assert self.lease is not None
        if members is None:
            return None  # coordinating since this tick: the next one reads what a coordinator needs
        entry_key = plan_key(name)
        problems: List[str] = []
        plan = _read_plan(name, keys)
        _, reports, figures = _parse_rollout(name, {k: v for k, v in keys.items() if k != entry_key},
                                             problems=problems, cache=self._parsed)
        self._parsed = {k: v for k, v in self._parsed.items() if k in keys}
        if problems:
            self._problem(name, "; ".join(problems))
        if plan is None:
            return None
        if plan.digest and plan.digest != self.digests[name]:
            return None
        self._transitions(name, plan, now, keys)
        present = {h for h, m in members.items() if name in m and m[name]["digest"] == plan.digest}
        view = FleetView(tuple(sorted(present | self._missing_briefly(plan, present, now))), reports, figures)
        decision = decide(plan, view, self.agents[name].settings, now, self._judge_once, self.on_host_lost)
        self._judged = {k: v for k, v in self._judged.items() if v[3] == now}  # this tick's only
        if decision.verdict is not None:
            self._publish_verdicts(name, decision, now)
        if decision.plan is None:
            return decision
        entry = self.store.get(entry_key)
        if entry is None or entry.value != keys.get(entry_key):
            return None  # changed since we read it (a command): decide again next tick
        if self.store.swap(entry_key, decision.plan.to_json(), entry.mod_revision,
                           held=[Held(COORDINATOR_KEY, self.lease)]):
            for event in decision.events:
                log.info("fleet: rollout %s: %s", name, event)
                self.events.append(f"{name}: {event}")
            self._transitions(name, decision.plan, now, keys)
        return decision

    def _judge_once(self, canary: Stats, stable: Stats, limits: Any, at: float, elapsed: float, *,
                    final_look: bool = False) -> Verdict:
        """The judge, asked once per host's figures: a host whose published figures did not change since the
        last tick (the same parsed objects, see _parse_rollout's cache) keeps its verdict; the pool is new."""
        key = (id(canary), id(stable), limits.risk, final_look)
        held = self._judged.get(key)
        if held is not None and held[0] is canary and held[1] is stable:
            self._judged[key] = (canary, stable, held[2], at)
            return held[2]
        verdict = self.judge(canary, stable, limits, at, elapsed, final_look=final_look)
        self._judged[key] = (canary, stable, verdict, at)
        return verdict

    def _missing_briefly(self, plan: Plan, present: Set[str], now: float) -> Set[str]:
        """Hosts of the plan absent for less than a lease TTL: still counted (not yet lost).

        A frozen or restarted etcd revokes every lease at once when it comes back, before their daemons can
        refresh them; they join again within a tick. Only a host that stays away a whole TTL more is lost.
        """
        for host in present:
            self.absent_since.pop(host, None)
        brief = set()
        for host in plan.hosts:
            if host not in present:
                since = self.absent_since.setdefault(host, now)
                if now - since < self.ttl:
                    brief.add(host)
        return brief

    def _publish_verdicts(self, name: str, decision: Decision, now: float) -> None:
        """The coordinator's last verdicts, for every host's ``status``: written when they change, or every 2 s."""
        assert decision.verdict is not None
        record = {"at": now, "fleet": [decision.verdict.verdict, decision.verdict.reason],
                  "hosts": {h: [v.verdict, v.reason] for h, v in decision.host_verdicts.items()}}
        kinds = json.dumps([record["fleet"][0], sorted((h, v[0]) for h, v in record["hosts"].items())])
        last_at, last_kinds = self._verdict_written.get(name, (0.0, ""))
        self.verdicts[name] = record
        if kinds == last_kinds and now - last_at < VERDICT_EVERY:
            return
        self.store.put(verdict_key(name), json.dumps(record, sort_keys=True), lease=self.lease)
        self._verdict_written[name] = (now, kinds)

    def _cut_off(self, now: float, exc: FleetError) -> None:
        if self.cut_off_since is None:
            self.cut_off_since = now
            log.error("fleet: etcd unreachable (%s): no step is taken until it answers; each host judges its own "
                      "canary meanwhile", exc)
        self.last_error = str(exc)
        self.coordinator = False
        for agent in self.agents.values():
            agent.judge_alone(now)


def _read_told(raw: Optional[bytes]) -> Optional[Told]:
    try:
        run, seq, state, step = json.loads(raw.decode("utf-8")) if raw else (None, 0, "", 0)
    except (UnicodeDecodeError, ValueError, TypeError):
        return None
    return (run, seq, state, step) if isinstance(run, str) else None


def _read_verdicts(raw: Optional[bytes]) -> Dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class PlanUnreadable(FleetError):
    """The rollout's plan in etcd is not a plan this release reads."""


def _read_plan(name: str, keys: Mapping[str, bytes]) -> Optional[Plan]:
    raw = keys.get(plan_key(name))
    try:
        return None if raw is None else Plan.from_json(raw, plan_key(name))
    except FleetError as exc:
        raise PlanUnreadable(str(exc)) from None


def _parse_rollout(name: str, keys: Mapping[str, bytes], mine_only: bool = False, problems: Optional[List[str]] = None,
                   cache: Optional[Dict[str, Tuple[bytes, Any]]] = None
                   ) -> Tuple[Optional[Plan], Dict[str, HostReport], Dict[str, HostFigures]]:
    """The rollout's plan (FleetError when unreadable), and the hosts' reports and figures that are readable.

    A report or figures record that cannot be read, or that names another host than its key, is left out
    (its host then counts as not having reported) and described in ``problems``.
    """
    raw = keys.get(plan_key(name))
    plan = None if raw is None else Plan.from_json(raw, plan_key(name))
    if mine_only:
        return plan, {}, {}
    reports: Dict[str, HostReport] = {}
    figures: Dict[str, HostFigures] = {}
    for key, value in keys.items():
        for prefix, kind, found in ((reports_prefix(name), HostReport, reports),
                                    (figures_prefix(name), HostFigures, figures)):
            if not key.startswith(prefix):
                continue
            held = cache.get(key) if cache is not None else None
            if held is not None and held[0] == value:
                record = held[1]
            else:
                try:
                    record = kind.from_json(value, key)  # type: ignore[attr-defined]
                except FleetError as exc:
                    if problems is not None:
                        problems.append(str(exc))
                    continue
                if cache is not None:
                    cache[key] = (value, record)
            if record.host != key[len(prefix):]:
                if problems is not None:
                    problems.append(f"etcd key {key}: written for host {record.host!r}: left out")
                continue
            found[record.host] = record
    return plan, reports, figures
