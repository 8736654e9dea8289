"""The SIGHUP plan (pure) and its application on fake runtimes: no daemon, no nginx."""

from __future__ import annotations

import logging
from dataclasses import replace
from types import MappingProxyType
from typing import Dict, List

import pytest

from nginx_canary.config.model import AnalysisSettings, DaemonSettings, RolloutSettings, WebhookSettings
from nginx_canary.daemon.reload import ReloadActions, apply_reload, plan_reload
from nginx_canary.errors import BadInputError


def rollout(name: str, **kwargs) -> RolloutSettings:
    return RolloutSettings(name=name, upstream=kwargs.pop("upstream", "backend"),
                           canary=kwargs.pop("canary", ("127.0.0.1:8082",)), **kwargs)


def daemon(*rollouts: RolloutSettings, **kwargs) -> DaemonSettings:
    return DaemonSettings(rollouts=MappingProxyType({r.name: r for r in rollouts}), **kwargs)


class FakeRuntime:
    def __init__(self, settings: RolloutSettings, state: str = "idle") -> None:
        self.settings, self.run_state = settings, state
        self.events: List[str] = []

    def reconfigure(self, settings: RolloutSettings) -> None:
        self.settings = settings
        self.events.append("reconfigure")

    def attach_integrations(self) -> None:
        self.events.append("attach")

    def close(self) -> None:
        self.events.append("close")


class Daemonish:
    """The runtimes and the operations apply_reload is given, recording what was done."""

    def __init__(self, settings: DaemonSettings, states: Dict[str, str]) -> None:
        self.settings = settings
        self.runtimes = {n: FakeRuntime(s, states.get(n, "idle")) for n, s in settings.rollouts.items()}
        self.done: List[str] = []
        self.unbuildable = set()

    def build(self, settings: RolloutSettings) -> FakeRuntime:
        if settings.name in self.unbuildable:
            raise BadInputError(f"rollout {settings.name!r}: no upstream {settings.upstream!r}")
        self.done.append(f"build {settings.name}")
        return FakeRuntime(settings)

    def retire(self, name: str, runtime: FakeRuntime) -> None:
        self.done.append(f"retire {name}")
        runtime.close()

    def forget(self, name: str) -> None:
        self.done.append(f"forget {name}")

    def reload(self, new: DaemonSettings) -> Dict[str, RolloutSettings]:
        running = {n: r.settings for n, r in self.runtimes.items()}
        plan = plan_reload(self.settings, new, running, lambda n: self.runtimes[n].run_state in ("progressing", "paused"))
        return apply_reload(plan, self.runtimes, running, ReloadActions(self.build, self.retire, self.forget))


A, B = rollout("a"), rollout("b")
STRICTER = AnalysisSettings(max_error_rate=0.01)


def test_an_idle_rollout_takes_every_setting_and_a_new_upstream_gets_a_new_runtime():
    d = Daemonish(daemon(A, B), {})
    new = daemon(replace(A, upstream="other"), replace(B, analysis=STRICTER))
    old_a = d.runtimes["a"]
    kept = d.reload(new)
    assert kept == dict(new.rollouts)
    assert d.done == ["build a", "retire a"] and old_a.events == ["close"]
    assert d.runtimes["a"].settings.upstream == "other"
    assert d.runtimes["b"].events == ["reconfigure"] and d.runtimes["b"].settings.analysis == STRICTER
    assert list(d.runtimes) == ["a", "b"]  # the file's order is kept


def test_an_active_rollout_keeps_its_upstream_canary_and_log_and_takes_the_rest(caplog):
    d = Daemonish(daemon(A), {"a": "progressing"})
    new = daemon(replace(A, upstream="other", canary=("127.0.0.1:9",), log_format="x", analysis=STRICTER))
    with caplog.at_level(logging.ERROR):
        kept = d.reload(new)
    assert kept["a"] == replace(A, analysis=STRICTER)
    assert d.done == [] and d.runtimes["a"].events == ["reconfigure"]
    assert "rollout a: SIGHUP: upstream, canary, log_format cannot change during a run" in caplog.text


def test_removed_rollouts_go_when_inactive_and_run_on_when_active(caplog):
    d = Daemonish(daemon(A, B), {"b": "paused"})
    with caplog.at_level(logging.INFO):
        kept = d.reload(daemon())
    assert list(d.runtimes) == ["b"] and kept == {"b": B}
    assert d.done == ["forget a"]
    assert "rollout b: removed from the config but paused; it runs on until it ends" in caplog.text


def test_added_rollouts_start_idle_and_one_that_does_not_fit_is_left_out(caplog):
    d = Daemonish(daemon(A), {})
    d.unbuildable.add("c")
    with caplog.at_level(logging.INFO):
        kept = d.reload(daemon(A, B, rollout("c")))
    assert list(d.runtimes) == ["a", "b"] and set(kept) == {"a", "b"}
    assert "rollout c: SIGHUP: not added: rollout 'c': no upstream 'backend'" in caplog.text


def test_a_rebuild_that_fails_keeps_the_old_runtime_and_settings():
    d = Daemonish(daemon(A), {})
    d.unbuildable.add("a")
    old = d.runtimes["a"]
    kept = d.reload(daemon(replace(A, upstream="missing")))
    assert d.runtimes["a"] is old and old.events == [] and kept == {"a": A}


def test_integrations_are_rebuilt_only_when_theirs_change():
    hook = (WebhookSettings(url="http://127.0.0.1:9/hook"),)
    d = Daemonish(daemon(A, B), {"b": "progressing"})
    d.reload(daemon(replace(A, webhooks=hook), replace(B, step_interval=5.0)))
    assert d.runtimes["a"].events == ["reconfigure", "attach"]
    assert d.runtimes["b"].events == ["reconfigure"]


@pytest.mark.parametrize("key, value", [("state_dir", "/elsewhere"), ("metrics_listen", "127.0.0.1:9145"),
                                        ("control_socket", "/run/x.sock")])
def test_settings_that_need_a_restart_are_only_warned_about(caplog, key, value):
    d = Daemonish(daemon(A), {})
    with caplog.at_level(logging.WARNING):
        kept = d.reload(daemon(A, **{key: value}))
    assert kept == {"a": A} and d.done == []
    assert f"daemon: SIGHUP: {key} changed; restart the daemon to apply it" in caplog.text
