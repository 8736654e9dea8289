"""The rollout's SplitApplier on a real nginx: snapshot, plan, apply, restore byte for byte."""

from __future__ import annotations

from fractions import Fraction

import pytest

from nginx_canary.rollout.applier import NginxSplitApplier
from nginx_canary.errors import NginxRejectedError, StateError
from nginx_canary.nginx.operations import Settings
from nginx_canary.rollout.machine import Rollout
from nginx_canary.config.model import AnalysisSettings, RolloutSettings
from nginx_canary.rollout.store import StateStore
from tests.rollout.figures import SuppliedTraffic


def applier_for(inst) -> NginxSplitApplier:
    settings = Settings(str(inst.conf), inst.binary, str(inst.prefix), str(inst.state_dir))
    return NginxSplitApplier(settings, "backend", [inst.v2])


def test_steps_then_restore_the_start_snapshot(nginx):
    applier = applier_for(nginx)
    start_files = nginx.config_files()
    snapshot = applier.begin("app")
    assert applier.snapshot_files(snapshot) == applier.files_now()
    for percent in (Fraction(10), Fraction(50)):
        planned = applier.plan(percent)
        assert planned != applier.files_now()
        workers = nginx.workers()
        assert applier.apply(percent) == planned == applier.files_now()
        assert not set(nginx.workers()) & set(workers)
        share = 100 * nginx.count_versions(200).get("v2", 0) / 200
        assert abs(share - float(percent)) <= 8
        assert applier.plan(percent) == applier.files_now()  # already there: nothing to change
    assert applier.restore(snapshot) == applier.snapshot_files(snapshot)
    assert nginx.config_files() == start_files
    assert nginx.count_versions(20) == {"v1": 20}


def test_a_rejected_step_leaves_the_files_and_nginx_as_they_were(nginx):
    applier = applier_for(nginx)
    applier.begin("app")
    (nginx.prefix / "conf.d" / "zz-broken.conf").write_text("bogus_directive on;\n")
    before = nginx.config_files()
    workers = nginx.workers()
    with pytest.raises(NginxRejectedError):
        applier.apply(Fraction(25))
    assert nginx.config_files() == before
    assert nginx.workers() == workers


def test_unknown_or_hostile_snapshot_ids_are_refused(nginx):
    applier = applier_for(nginx)
    for bad in ("app-1", "../../etc-1", "app"):
        with pytest.raises(StateError):
            applier.snapshot_files(bad)


# --- the state machine on real files and a real nginx (traffic figures supplied directly) ---


def rollout_for(inst, traffic: SuppliedTraffic) -> Rollout:
    settings = RolloutSettings(
        name="app", upstream="backend", canary=(inst.v2,), steps=(Fraction(10), Fraction(50), Fraction(100)),
        step_interval=60.0, on_success="keep",
        analysis=AnalysisSettings(interval=1.0, window=30.0, min_requests=20, failure_threshold=2))
    return Rollout(settings, StateStore(str(inst.state_dir)), applier_for(inst), traffic)


def test_a_healthy_rollout_steps_real_weights_to_promotion(nginx):
    traffic = SuppliedTraffic()
    rollout = rollout_for(nginx, traffic)
    rollout.start(1000.0)
    assert rollout.status()["canary_percent"] == 10
    now = 1000.0
    for expected in (50, 100):
        now += 61.0
        rollout.tick(now - 1.0)
        rollout.tick(now)
        assert rollout.status()["canary_percent"] == expected
    rollout.tick(now + 61.0)
    assert rollout.status()["state"] == "promoted"
    assert nginx.count_versions(20) == {"v2": 20}


def test_a_failing_canary_is_rolled_back_to_the_original_bytes(nginx):
    traffic = SuppliedTraffic()
    start_files = nginx.config_files()
    rollout = rollout_for(nginx, traffic)
    rollout.start(1000.0)
    assert "v2" in nginx.count_versions(60)
    traffic.canary_errors = 50
    rollout.tick(1001.0)
    assert rollout.status()["state"] == "progressing"
    rollout.tick(1002.0)
    assert rollout.status()["state"] == "rolled_back"
    assert nginx.config_files() == start_files
    assert nginx.count_versions(20) == {"v1": 20}


@pytest.mark.parametrize("percent", [50, 10])
def test_restore_weights_keeps_a_foreign_edit_and_puts_the_split_back(nginx, percent):
    # At 10 % the stable server gets weight=9: the restore gives back its bare `server ADDR;`, not weight=1.
    applier = applier_for(nginx)
    original = nginx.upstream_conf.read_text()
    snapshot = applier.begin("app")
    applier.apply(Fraction(percent))
    assert nginx.upstream_conf.read_text() != original
    edited = nginx.upstream_conf.read_text().replace("upstream backend {", "upstream backend {\n    # on call: ops")
    nginx.upstream_conf.write_text(edited)
    planned = applier.plan_restore_weights(snapshot)
    assert applier.restore_weights(snapshot) == planned == applier.files_now()
    text = nginx.upstream_conf.read_text()
    assert "# on call: ops" in text
    assert text == original.replace("upstream backend {", "upstream backend {\n    # on call: ops")
    assert nginx.count_versions(20) == {"v1": 20}
    assert applier.plan_restore_weights(snapshot) == applier.files_now()  # nothing left to do


def test_a_rollout_aborted_over_a_foreign_edit_keeps_it(nginx):
    traffic = SuppliedTraffic()
    rollout = rollout_for(nginx, traffic)
    rollout.start(1000.0)
    nginx.upstream_conf.write_text(nginx.upstream_conf.read_text() + "# added by hand\n")
    rollout.tick(1001.0)
    assert rollout.status()["state"] == "paused"
    rollout.abort(1002.0)
    assert rollout.status()["state"] == "aborted"
    assert nginx.upstream_conf.read_text().endswith("# added by hand\n")
    assert nginx.count_versions(20) == {"v1": 20}
