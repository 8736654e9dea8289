"""SIGHUP re-reads the YAML: new timings and thresholds reach a running rollout; a broken file changes nothing."""

from __future__ import annotations

import signal
import time

from tests.daemon.conftest import FAST_ANALYSIS, WAIT, non_check_events, records


def wait_for_log(h, text, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while text not in h.daemon_log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{h.daemon_log()}"
        time.sleep(0.05)


def test_sighup_takes_a_new_step_interval_and_survives_a_broken_file(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="60s")
    load = h.load(rate=150)
    h.start_rollout()
    status = h.wait_status(lambda s: (s["last_check"] or {}).get("verdict") == "pass", "a passing check")
    assert (status["step"], status["step_interval"]) == (0, 60.0)

    h.site.write_daemon_config(steps=(10, 50, 100), step_interval="1s", analysis=FAST_ANALYSIS)
    h.daemon.send_signal(signal.SIGHUP)
    status = h.wait_status(lambda s: s["step_interval"] == 1.0, "the new step interval")
    wait_for_log(h, "SIGHUP: config re-read from")
    h.wait_step(1)

    good = h.site.daemon_config.read_bytes()
    h.site.daemon_config.write_bytes(good.replace(b"    step_interval: 1s\n", b"    step_interval: 1s\n  bogus: [\n"))
    h.daemon.send_signal(signal.SIGHUP)
    wait_for_log(h, "SIGHUP: keeping the running config")
    assert f"SIGHUP: keeping the running config: {h.site.daemon_config}:" in h.daemon_log()
    assert "invalid YAML" in h.daemon_log()
    assert h.daemon.poll() is None
    assert h.call("ping")["pid"] == h.daemon.pid
    assert h.status()["step_interval"] == 1.0  # the old config, not the broken one nor a default

    # Unknown keys are errors too; the rollout carries on with what it had.
    h.site.daemon_config.write_bytes(good.replace(b"  app:\n", b"  app:\n    colour: blue\n"))
    h.daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while h.daemon_log().count("SIGHUP: keeping the running config") < 2:
        assert time.monotonic() < deadline, h.daemon_log()
        time.sleep(0.05)
    assert f"{h.site.daemon_config}:9: rollouts.app: unknown key 'colour'" in h.daemon_log()
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    assert final["state"] == "promoted", final["message"]
    assert h.daemon.poll() is None
    seen = load.finish()
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()
    assert non_check_events(h) == ["start", "step", "step", "step", "promoted"]


def test_sighup_takes_tighter_thresholds(make_harness):
    # 10 % of the canary's answers are 5xx: fine under loose limits, a rollback under the defaults.
    loose = {"max_error_rate": 0.5, "max_error_rate_increase": 0.5, "error_rate_tolerance": 100}
    h = make_harness(steps=(10, 50, 100), step_interval="60s", analysis=loose, v2={"error_rate": 0.1})
    load = h.load(rate=150)
    h.start_rollout()
    status = h.wait_status(lambda s: (s["last_check"] or {}).get("verdict") == "pass"
                           and s["canary"]["errors_5xx"] > 0, "a passing check despite canary 5xx")
    assert status["state"] == "progressing" and status["failure_streak"] == 0
    assert h.site.config_files() != h.originals

    h.site.write_daemon_config(steps=(10, 50, 100), step_interval="60s",
                               analysis={**FAST_ANALYSIS, "max_error_rate": 0.05, "max_error_rate_increase": 0.02})
    h.daemon.send_signal(signal.SIGHUP)
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()
    assert final["state"] == "rolled_back", final["message"]
    failed = {c["name"]: c for c in final["last_check"]["checks"] if c["verdict"] == "fail"}
    # The canary's 5xx against stable's clean record: caught by the comparison, on the re-read limit.
    assert failed["error_rate_increase"]["threshold"] == 0.02
    assert h.site.config_files() == h.originals
    h.assert_state_matches_files()
    assert records(h, "rollback")[0]["detail"]["reason"].startswith("2 consecutive failed checks")
    assert set(seen.versions_5xx) == {"v2"}
    assert h.probe(50).versions == {"v1": 50}
