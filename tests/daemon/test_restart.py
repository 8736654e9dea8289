"""The daemon killed (SIGKILL) or stopped (SIGTERM) mid-rollout and started again: state and files agree, the run goes on."""

from __future__ import annotations

import os
import signal

import pytest

from tests.daemon.conftest import catch_files_written, catch_step_change_in_flight, non_check_events, records

STEPS = (10, 50, 100)


def finish_after_restart(h, load):
    """Wait for the restarted daemon to promote; check what the clients saw and that state and files agree."""
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()
    assert final["state"] == "promoted", final["message"]
    h.assert_state_matches_files()
    assert h.probe(50).versions == {"v2": 50}
    # nginx served throughout, with or without the daemon: not one error.
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()
    assert [s["detail"]["to_percent"] for s in records(h, "step")][-1] == "100"
    return final


def test_sigkill_right_after_a_step_change_resumes_at_that_step(make_harness):
    h = make_harness(steps=STEPS, step_interval="1s")
    load = h.load(rate=150)
    h.start_rollout()
    at = h.wait_step(1)
    assert (at["state"], at["step"]) == ("progressing", 1), at["message"]
    assert h.signal_daemon(signal.SIGKILL) == -signal.SIGKILL

    saved = h.assert_state_matches_files()  # what the state says is what nginx has
    assert saved["state"] == "progressing" and saved["step_index"] >= 1 and saved["step_started_at"] is not None
    step, percent = saved["step_index"], saved["canary_percent"]
    assert percent == str(STEPS[step])
    assert not os.path.exists(os.path.join(h.site.state_dir, "journal.json"))
    # nginx goes on serving the split of that step while the daemon is down.
    during = h.probe(100)
    assert during.status_2xx == 100 and during.versions.get("v2", 0) > 0, during.summary()

    h.start_daemon()
    status = h.status()
    assert (status["state"], status["step"], status["canary_percent"]) == ("progressing", step, STEPS[step])
    assert "resumed after a restart, bake time restarted" in status["message"]
    recovered = records(h, "recovered")
    assert [r["detail"]["outcome"] for r in recovered] == ["files as expected, step resumed"]
    assert "recovered" in h.daemon_log(2)

    finish_after_restart(h, load)
    events = non_check_events(h)
    assert events[:2] == ["start", "step"] and events[-1] == "promoted"
    assert events.count("recovered") == 1 and events.count("step") == len(STEPS)


@pytest.mark.parametrize("moment", ["intent-saved", "files-written"])
def test_sigkill_during_a_step_change(make_harness, moment):
    h = make_harness(steps=STEPS, step_interval="1s")
    load = h.load(rate=150)
    h.start_rollout()
    if moment == "intent-saved":
        # The saved state shows the step change's intent (step_started_at None): killed before or while
        # nginx is changed.
        caught = catch_step_change_in_flight(h, min_step=1)
        h.daemon.kill()
        assert caught is not None, "the rollout ended before a step change was seen in flight"
        step = caught["step_index"]
    else:
        # The new upstream.conf is written, the transaction not finished (nginx -t, reload, verification).
        caught = catch_files_written(h, min_step=1)
        h.daemon.kill()
        assert caught is not None, "the rollout ended before a step change was seen writing nginx's files"
        step = caught["step_index"]
    assert h.daemon.wait(10) == -signal.SIGKILL
    in_flight = h.saved_state()
    assert in_flight["state"] == "progressing"

    # Whatever the kill interrupted (the edit, nginx -t, the reload), the next start puts it straight.
    h.start_daemon()
    status = h.status()
    assert status["state"] == "progressing" and status["step"] >= step, status
    h.assert_state_matches_files()
    recovered = records(h, "recovered")
    if in_flight["step_started_at"] is None:
        assert [r["detail"]["outcome"] for r in recovered] in (
            ["step change had finished"], ["step change had not happened, applying it again"]), recovered
    else:  # killed after the step change's last save: nothing was in flight any more
        assert [r["detail"]["outcome"] for r in recovered] == ["files as expected, step resumed"], recovered
    if moment == "files-written":
        # The transaction's own recovery put the old bytes back before the rollout settled the step.
        assert "recovered an interrupted change" in h.daemon_log(2) and "restored 1 file(s)" in h.daemon_log(2)
    final = finish_after_restart(h, load)
    assert final["steps"] == list(STEPS)
    assert non_check_events(h).count("recovered") == 1


def test_sigterm_mid_step_and_during_a_step_change(make_harness):
    h = make_harness(steps=STEPS, step_interval="2s")
    load = h.load(rate=150)
    h.start_rollout()

    # 1. SIGTERM while the second step bakes: exit 0, everything saved, resumed at that step.
    at = h.wait_step(1)
    assert (at["state"], at["step"]) == ("progressing", 1), at["message"]
    assert h.signal_daemon(signal.SIGTERM) == 0
    log = h.daemon_log(1)
    assert "SIGTERM received, finishing what is under way" in log and "daemon: stopped" in log
    assert not os.path.exists(h.site.socket_path)
    saved = h.assert_state_matches_files()
    assert (saved["state"], saved["step_index"], saved["canary_percent"]) == ("progressing", 1, "50")
    assert saved["step_started_at"] is not None
    stopped = h.cli("status", "app")
    assert stopped.returncode == 3 and "daemon is not running" in stopped.stderr
    h.start_daemon()
    status = h.status()
    assert (status["state"], status["step"], status["canary_percent"]) == ("progressing", 1, 50)
    assert [r["detail"]["outcome"] for r in records(h, "recovered")] == ["files as expected, step resumed"]

    # 2. SIGTERM while the next step change is in flight: it is finished and saved before the exit.
    caught = catch_step_change_in_flight(h, min_step=2)
    assert h.signal_daemon(signal.SIGTERM) == 0
    assert caught is not None, "the rollout ended before a step change was seen in flight"
    saved = h.assert_state_matches_files()
    assert (saved["state"], saved["step_index"], saved["canary_percent"]) == ("progressing", 2, "100"), saved
    assert saved["step_started_at"] is not None
    assert records(h, "step")[-1]["detail"]["to_percent"] == "100"
    assert not os.path.exists(os.path.join(h.site.state_dir, "journal.json"))
    h.start_daemon()
    status = h.status()
    assert (status["state"], status["step"]) == ("progressing", 2)
    assert [r["detail"]["outcome"] for r in records(h, "recovered")] == ["files as expected, step resumed"] * 2

    finish_after_restart(h, load)
    assert [s["detail"]["to_percent"] for s in records(h, "step")] == ["10", "50", "100"]
    assert non_check_events(h) == ["start", "step", "step", "recovered", "step", "recovered", "promoted"]
