"""A rollout (the state machine, the real applier) over a sticky upstream on a real nginx.

Traffic figures are supplied directly (tests/rollout/figures.py), as in tests/rollout/test_applier.py; the
keys' routes are measured through nginx with 2,000 distinct ``uid`` cookies.
"""

from __future__ import annotations

from fractions import Fraction

from nginx_canary.config.model import AnalysisSettings, RolloutSettings
from nginx_canary.nginx.operations import Settings
from nginx_canary.rollout.applier import NginxSplitApplier
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.store import StateStore
from tests.rollout.figures import SuppliedTraffic
from tests.nginx.test_sticky_nginx import APPS_CONF, HOSTS, STICKY_CONF, fixed_port, route

KEYS = [f"r{n:04d}" for n in range(2000)]


def start_site(inst):
    port = fixed_port()
    inst.upstream_conf.write_text(STICKY_CONF.format(port=port))
    (inst.prefix / "conf.d" / "apps.conf").write_text(APPS_CONF.format(port=port))
    inst.start()
    return f"{HOSTS['v2']}:{port}"


def rollout_for(inst, canary: str, traffic: SuppliedTraffic) -> Rollout:
    settings = RolloutSettings(
        name="app", upstream="backend", canary=(canary,), steps=(Fraction(5), Fraction(25), Fraction(50), Fraction(100)),
        step_interval=60.0, on_success="keep", sticky=True,
        analysis=AnalysisSettings(interval=1.0, window=30.0, min_requests=20, failure_threshold=2))
    ops = Settings(str(inst.conf), inst.binary, str(inst.prefix), str(inst.state_dir))
    return Rollout(settings, StateStore(str(inst.state_dir)), NginxSplitApplier(ops, "backend", [canary]), traffic)


def canary_keys(inst) -> set:
    return {k for k, body in route(inst.ports["front"], KEYS).items() if body == "v2"}


def test_a_healthy_sticky_rollout_promotes_and_no_key_leaves_the_canary(nginx_stopped):
    canary = start_site(nginx_stopped)
    rollout = rollout_for(nginx_stopped, canary, SuppliedTraffic())
    rollout.start(1000.0)
    now, seen = 1000.0, canary_keys(nginx_stopped)
    for expected in (25, 50, 100):
        now += 61.0
        rollout.tick(now - 1.0)
        rollout.tick(now)
        assert rollout.status()["canary_percent"] == expected
        keys = canary_keys(nginx_stopped)
        assert seen <= keys and len(keys) > len(seen), expected
        seen = keys
    rollout.tick(now + 61.0)
    assert rollout.status()["state"] == "promoted"
    assert seen == set(KEYS)
    assert "weight=" in nginx_stopped.upstream_conf.read_text()


def test_a_failing_sticky_canary_is_rolled_back_and_every_key_is_on_stable(nginx_stopped):
    canary = start_site(nginx_stopped)
    start_files = nginx_stopped.config_files()
    before = route(nginx_stopped.ports["front"], KEYS)
    traffic = SuppliedTraffic()
    rollout = rollout_for(nginx_stopped, canary, traffic)
    rollout.start(1000.0)
    assert canary_keys(nginx_stopped)
    traffic.canary_errors = 50
    rollout.tick(1001.0)
    rollout.tick(1002.0)
    assert rollout.status()["state"] == "rolled_back"
    assert nginx_stopped.config_files() == start_files
    assert route(nginx_stopped.ports["front"], KEYS) == before
