"""A healthy canary goes through every step to promotion, and clients never see an error on the way."""

from __future__ import annotations

from tests.daemon.conftest import DEFAULT_THRESHOLDS, assert_files_give_canary_everything, non_check_events, records


def test_healthy_canary_is_promoted(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="1s")
    load = h.load(rate=150)
    started = h.start_rollout()
    assert (started["state"], started["step"], started["canary_percent"]) == ("progressing", 0, 10)
    assert started["steps"] == [10, 50, 100]

    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()

    assert final["state"] == "promoted", final["message"]
    assert (final["step"], final["canary_percent"], final["snapshot_id"]) == (2, 100, None)
    assert final["last_check"]["verdict"] == "pass"
    assert final["canary"]["requests"] >= 10 and final["canary"]["errors_5xx"] == 0
    # What the clients saw: both versions, never an error, not even while nginx reloaded three times.
    assert seen.status_5xx == 0 and seen.socket_errors == 0 and seen.status_4xx == 0, seen.summary()
    assert seen.versions.get("v1", 0) > 0 and seen.versions.get("v2", 0) > 0, seen.summary()
    assert set(seen.versions) == {"v1", "v2"}

    assert non_check_events(h) == ["start", "step", "step", "step", "promoted"]
    steps = records(h, "step")
    assert [s["detail"]["to_percent"] for s in steps] == ["10", "50", "100"]
    assert [s["detail"]["manual"] for s in steps] == [True, False, False]
    snapshot = records(h, "start")[0]["detail"]["snapshot_id"]
    assert snapshot == started["snapshot_id"]
    promoted = records(h, "promoted")[0]
    assert promoted["state"] == "promoted" and promoted["detail"]["manual"] is False
    assert "passed its bake time" in promoted["detail"]["reason"]
    # No automatic step without a passing check at the step before it.
    history = h.history()
    for step in steps[1:]:
        before = [r for r in history[:history.index(step)] if r["event"] == "check"]
        assert before and before[-1]["detail"]["verdict"]["verdict"] == "pass"

    saved = h.assert_state_matches_files()
    assert (saved["state"], saved["canary_percent"], saved["snapshot_id"]) == ("promoted", "100", None)
    assert_files_give_canary_everything(h)
    after = h.probe(100)
    assert after.versions == {"v2": 100} and after.status_2xx == 100, after.summary()


def test_on_success_restore_puts_the_original_files_back(make_harness):
    h = make_harness(steps=(50, 100), step_interval="1s", on_success="restore")
    load = h.load(rate=150)
    h.start_rollout()
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()

    assert final["state"] == "promoted", final["message"]
    assert final["canary_percent"] == 0 and final["snapshot_id"] is None
    assert "on_success: restore" in final["message"]
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()
    assert seen.versions.get("v2", 0) > 0
    assert h.site.config_files() == h.originals
    assert non_check_events(h) == ["start", "step", "step", "promoted", "restored"]
    assert records(h, "restored")[0]["detail"]["written"] is True
    h.assert_state_matches_files()
    assert h.probe(50).versions == {"v1": 50}


def test_identical_canary_is_promoted_with_default_thresholds(make_harness):
    # Regression test for a bug found by this suite: before 62e833a a canary that is the very same app
    # as stable was rolled back in about half of the runs on this machine, by p99_latency_ratio with
    # its default 2.0. nginx logs $upstream_response_time in whole milliseconds, the demo apps answer
    # in well under one, and a p99 over a few dozen canary requests is their maximum: "canary p99
    # latency 0.002 s is 2.02x stable's 0.001 s, more than 2.0x" (or one 30 ms hiccup, 5x) failed two
    # checks 250 ms apart on the same window. Expected and now required: promoted.
    h = make_harness(steps=(10, 25, 50, 100), step_interval="1s",
                     analysis={"window": "10s", **DEFAULT_THRESHOLDS})
    load = h.load(rate=200)
    h.start_rollout()
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed", timeout=40)
    seen = load.finish()
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()
    assert final["state"] == "promoted", final["message"]
    assert_files_give_canary_everything(h)
