"""SIGHUP: what a re-read YAML changes for the running daemon, as a plan (pure) and its application.

:func:`plan_reload` compares the running settings (and which rollouts are
mid-run) with the new file and decides, without touching anything:

* settings that need a restart (``nginx``, ``state_dir``, the sockets,
  ``metrics_listen``) are only warned about;
* an idle or finished rollout takes every new setting; one whose upstream,
  canary or log changed gets a new runtime (``rebuild``);
* an active rollout (progressing, paused, or owing a restore) takes new
  thresholds and timings but keeps its upstream, canary and log: changing
  those mid-run would judge one release on another's traffic (``pinned``);
* a rollout gone from the file goes away if inactive, runs on until it ends
  if active; a new one is added idle.

:func:`apply_reload` carries a plan out on the daemon's runtimes through the
few operations it is given, so that it can be tested without a daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Dict, Mapping, MutableMapping, Protocol, Tuple

from nginx_canary.config.model import DaemonSettings, RolloutSettings
from nginx_canary.errors import CanaryError

log = logging.getLogger(__name__)

#: Settings whose change needs a restart rather than a SIGHUP.
RESTART_KEYS = ("nginx", "state_dir", "control_socket", "control_group", "metrics_listen")
#: Rollout settings that a running rollout cannot take over mid-run.
RUN_KEYS = ("upstream", "canary", "access_log", "log_format")


@dataclass(frozen=True)
class RolloutChange:
    """What the reload does to one rollout of the new file that already runs."""

    settings: RolloutSettings  # what it runs with from now on (run keys pinned for an active one)
    rebuild: bool = False  # inactive, and its upstream, canary or log changed: a new runtime
    pinned: Tuple[str, ...] = ()  # active: these run keys changed and are kept as they were
    new_integrations: bool = False  # webhooks, gates, HTTP checks or their interval changed


@dataclass(frozen=True)
class ReloadPlan:
    """Everything a SIGHUP changes, in the order it is applied."""

    restart_keys: Tuple[str, ...]
    removed: Tuple[str, ...]  # inactive and gone from the file
    orphaned: Tuple[str, ...]  # active and gone from the file: runs on until it ends
    changed: Mapping[str, RolloutChange]
    added: Mapping[str, RolloutSettings]


def _integrations(settings: RolloutSettings) -> Tuple[object, ...]:
    return (settings.webhooks, settings.gates, settings.analysis.http_checks, settings.analysis.interval)


def plan_reload(current: DaemonSettings, new: DaemonSettings, running: Mapping[str, RolloutSettings],
                active: Callable[[str], bool]) -> ReloadPlan:
    """The plan for taking ``new`` over ``current``; ``running`` maps each runtime's name to its settings.

    ``active(name)``: whether that rollout is mid-run (progressing, paused, or
    owing a restore). Pure: raises nothing.
    """
    restart = tuple(key for key in RESTART_KEYS if getattr(new, key) != getattr(current, key))
    removed, orphaned = [], []
    changed: Dict[str, RolloutChange] = {}
    for name, settings in running.items():
        wanted = new.rollouts.get(name)
        if wanted is None:
            (orphaned if active(name) else removed).append(name)
            continue
        run_changed = tuple(k for k in RUN_KEYS if getattr(wanted, k) != getattr(settings, k))
        if run_changed and active(name):
            wanted = replace(wanted, **{k: getattr(settings, k) for k in RUN_KEYS})
            changed[name] = RolloutChange(wanted, pinned=run_changed,
                                          new_integrations=_integrations(wanted) != _integrations(settings))
        elif run_changed:
            changed[name] = RolloutChange(wanted, rebuild=True)
        else:
            changed[name] = RolloutChange(wanted, new_integrations=_integrations(wanted) != _integrations(settings))
    added = {name: wanted for name, wanted in new.rollouts.items() if name not in running}
    return ReloadPlan(restart, tuple(removed), tuple(orphaned), changed, added)


class Runtime(Protocol):
    """What :func:`apply_reload` needs of a rollout's runtime."""

    @property
    def run_state(self) -> str: ...

    def reconfigure(self, settings: RolloutSettings) -> None: ...

    def attach_integrations(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class ReloadActions:
    """The daemon's operations a plan is carried out with."""

    build: Callable[[RolloutSettings], Runtime]  # raises CanaryError when the rollout does not fit nginx's config
    retire: Callable[[str, Runtime], None]  # a runtime leaves: save what it owes, close it
    forget: Callable[[str], None]  # a removed rollout's traces outside its runtime (metrics)


def apply_reload(plan: ReloadPlan, runtimes: MutableMapping[str, Runtime], running: Mapping[str, RolloutSettings],
                 actions: ReloadActions) -> Dict[str, RolloutSettings]:
    """Carry ``plan`` out on ``runtimes`` (changed in place, order kept); returns the settings each now runs with.

    A rollout that cannot be rebuilt or added is logged and left as it was
    (or out); nothing raises.
    """
    for key in plan.restart_keys:
        log.warning("daemon: SIGHUP: %s changed; restart the daemon to apply it", key)
    kept: Dict[str, RolloutSettings] = {}
    for name in list(runtimes):
        if name in plan.orphaned:
            log.warning("rollout %s: removed from the config but %s; it runs on until it ends", name,
                        runtimes[name].run_state)
            kept[name] = running[name]
        elif name in plan.removed:
            runtime = runtimes.pop(name)
            runtime.close()
            actions.forget(name)
            log.info("rollout %s: removed", name)
        elif name in plan.changed:
            kept[name] = _apply_change(name, plan.changed[name], runtimes, running[name], actions)
    for name, wanted in plan.added.items():
        try:
            runtimes[name] = actions.build(wanted)
        except CanaryError as exc:
            log.error("rollout %s: SIGHUP: not added: %s", name, exc)
            continue
        kept[name] = wanted
        log.info("rollout %s: added", name)
    return {name: kept[name] for name in runtimes if name in kept}


def _apply_change(name: str, change: RolloutChange, runtimes: MutableMapping[str, Runtime],
                  current: RolloutSettings, actions: ReloadActions) -> RolloutSettings:
    if change.rebuild:
        try:
            replacement = actions.build(change.settings)
        except CanaryError as exc:
            log.error("rollout %s: SIGHUP: keeping its old settings: %s", name, exc)
            return current
        actions.retire(name, runtimes[name])
        runtimes[name] = replacement
        changed = [k for k in RUN_KEYS if getattr(change.settings, k) != getattr(current, k)]
        log.info("rollout %s: new settings taken (%s)", name, ", ".join(changed))
        return change.settings
    if change.pinned:
        log.error("rollout %s: SIGHUP: %s cannot change during a run; the rest of its settings are taken",
                  name, ", ".join(change.pinned))
    runtime = runtimes[name]
    runtime.reconfigure(change.settings)
    if change.new_integrations:
        runtime.attach_integrations()
    return change.settings
