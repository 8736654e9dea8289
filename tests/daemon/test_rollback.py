"""A canary answering 5xx is rolled back: the original files byte for byte, all traffic on stable again."""

from __future__ import annotations

import pytest

from tests.daemon.conftest import non_check_events, records


@pytest.mark.parametrize("error_rate, break_at_step", [(1.0, 0), (0.3, 1)], ids=["all-5xx-at-10pc", "30pc-5xx-at-50pc"])
def test_failing_canary_is_rolled_back(make_harness, error_rate, break_at_step):
    # Broken from the start (every answer v2 ever gives is a 500), or once the rollout reached a later step.
    h = make_harness(steps=(10, 50, 100), step_interval="1s", v2={"error_rate": 0.0 if break_at_step else error_rate})
    load = h.load(rate=150)
    started = h.start_rollout()
    snapshot = started["snapshot_id"]
    if break_at_step:
        at = h.wait_step(break_at_step)
        assert (at["state"], at["step"]) == ("progressing", break_at_step), at["message"]
        assert h.site.config_files() != h.originals
        h.v2.update(error_rate=error_rate)

    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()

    assert final["state"] == "rolled_back", final["message"]
    assert (final["step"], final["canary_percent"], final["snapshot_id"]) == (break_at_step, 0, None)
    assert final["last_check"]["verdict"] == "fail"
    assert final["failure_streak"] >= 2
    failed = {c["name"] for c in final["last_check"]["checks"] if c["verdict"] == "fail"}
    assert "error_rate" in failed and failed <= {"error_rate", "error_rate_increase"}, final["last_check"]
    assert final["canary"]["errors_5xx"] > 0

    # Every nginx file is back byte for byte, the state says so, and nginx serves it.
    assert h.site.config_files() == h.originals
    saved = h.assert_state_matches_files()
    assert (saved["state"], saved["canary_percent"], saved["snapshot_id"]) == ("rolled_back", "0", None)
    after = h.probe(100)
    assert after.versions == {"v1": 100} and after.status_2xx == 100, after.summary()

    # What clients saw meanwhile: 5xx only ever from the canary, no connection errors.
    assert seen.socket_errors == 0, seen.summary()
    assert seen.status_5xx > 0 and set(seen.versions_5xx) == {"v2"}, seen.summary()
    if error_rate == 1.0:
        assert seen.versions_5xx["v2"] == seen.versions["v2"]

    assert non_check_events(h) == ["start"] + ["step"] * (break_at_step + 1) + ["rollback", "restored"]
    rollback = records(h, "rollback")[0]
    reason = rollback["detail"]["reason"]
    assert reason.startswith("2 consecutive failed checks (failure_threshold 2): ") and "error_rate" in reason
    assert rollback["detail"]["snapshot_id"] == snapshot and rollback["detail"]["changed_outside"] == []
    restored = records(h, "restored")[0]
    assert restored["state"] == "rolled_back" and restored["canary_percent"] == "0"
    assert restored["detail"]["snapshot_id"] == snapshot and restored["detail"]["written"] is True
    assert reason in restored["detail"]["message"] and "original files restored" in restored["detail"]["message"]
    fails = [r for r in records(h, "check") if r["detail"]["verdict"]["verdict"] == "fail"]
    assert len(fails) >= 2 and fails[-1]["detail"]["failure_streak"] >= 2
    # The daemon stays up for the next run.
    assert h.daemon.poll() is None
