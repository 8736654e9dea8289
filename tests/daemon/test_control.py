"""pause / resume / promote / promote --full / abort through the CLI, against the running daemon."""

from __future__ import annotations

import json
import time

from tests.daemon.conftest import WAIT, assert_files_give_canary_everything, non_check_events, one_line_error, records


def cli_ok(h, *args):
    result = h.cli(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert result.stderr == "", result.stderr
    return result


def cli_status(h):
    return json.loads(cli_ok(h, "status", "app", "--json").stdout)


def test_pause_holds_the_step_and_resume_goes_on(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="1s")
    load = h.load(rate=150)
    out = cli_ok(h, "start", "app").stdout
    assert out.startswith("app  progressing  upstream backend  canary 10 %"), out
    out = cli_ok(h, "pause", "app").stdout
    assert out.startswith("app  paused  upstream backend  canary 10 %"), out
    assert "paused: paused by the operator" in out
    paused_files = h.site.config_files()

    # Checks go on while paused and pass, but the step does not move: watch for 2 bake times of passes.
    first_pass = None
    deadline = time.monotonic() + WAIT
    while True:
        status = h.status()
        assert (status["state"], status["step"], status["canary_percent"]) == ("paused", 0, 10), status
        check = status["last_check"]
        if check is not None and check["verdict"] == "pass":
            first_pass = first_pass or check["at"]
            if check["at"] - first_pass >= 2 * status["step_interval"]:
                break
        assert time.monotonic() < deadline, f"no passing checks while paused: {status}"
        time.sleep(0.1)
    assert status["time_left_in_step"] is None
    assert h.site.config_files() == paused_files

    again = h.cli("pause", "app")
    assert again.returncode == 2 and again.stdout == ""
    assert one_line_error(again) == \
        "nginx-canary: error: rollout 'app' is paused, only a progressing rollout can be paused"

    out = cli_ok(h, "resume", "app").stdout
    assert out.startswith("app  progressing  upstream backend  canary 10 %"), out
    wrong = h.cli("resume", "app")
    assert wrong.returncode == 2
    assert one_line_error(wrong) == \
        "nginx-canary: error: rollout 'app' is progressing, only a paused rollout can be resumed"
    moved = h.wait_step(1)
    seen = load.finish()
    assert (moved["state"], moved["step"], moved["canary_percent"]) == ("progressing", 1, 50), moved["message"]
    assert non_check_events(h)[:5] == ["start", "step", "pause", "resume", "step"]
    assert records(h, "pause")[0]["detail"]["reason"] == "paused by the operator"
    assert records(h, "resume")[0]["detail"]["changed_outside"] == []
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()


def test_promote_and_promote_full(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="1s")
    load = h.load(rate=150)
    # A long bake time for this run: only the operator moves it.
    cli_ok(h, "start", "app", "--steps", "5,20,50,100", "--step-interval", "60s")
    status = cli_status(h)
    assert (status["state"], status["step"], status["canary_percent"]) == ("progressing", 0, 5)
    assert status["steps"] == [5, 20, 50, 100] and status["step_interval"] == 60.0

    out = cli_ok(h, "promote", "app").stdout
    assert out.startswith("app  progressing  upstream backend  canary 20 %"), out
    status = h.status()
    assert (status["state"], status["step"], status["canary_percent"]) == ("progressing", 1, 20)
    h.assert_state_matches_files()
    share = h.probe(100).versions
    assert share.get("v2", 0) > 0 and share.get("v1", 0) > 0, share

    out = cli_ok(h, "promote", "app", "--full").stdout
    assert out.startswith("app  promoted  upstream backend  canary 100 %"), out
    status = h.status()
    assert (status["state"], status["step"], status["canary_percent"], status["snapshot_id"]) == \
        ("promoted", 3, 100, None)
    seen = load.finish()

    assert_files_give_canary_everything(h)
    h.assert_state_matches_files()
    assert h.probe(50).versions == {"v2": 50}
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()
    assert non_check_events(h) == ["start", "step", "promote", "step", "promote", "step", "promoted"]
    start = records(h, "start")[0]["detail"]
    assert start["steps"] == ["5", "20", "50", "100"] and start["step_interval"] == 60.0
    assert [s["detail"]["to_percent"] for s in records(h, "step")] == ["5", "20", "100"]
    assert all(s["detail"]["manual"] for s in records(h, "step"))
    assert [p["detail"]["full"] for p in records(h, "promote")] == [False, True]
    assert records(h, "promoted")[0]["detail"]["manual"] is True

    late = h.cli("promote", "app")
    assert late.returncode == 2
    assert "only a progressing or paused rollout can be promoted" in one_line_error(late)


def test_abort_restores_the_original_bytes(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="1s")
    load = h.load(rate=150)
    cli_ok(h, "start", "app", "--step-interval", "60s")
    cli_ok(h, "promote", "app")
    assert h.status()["canary_percent"] == 50
    assert h.site.config_files() != h.originals

    out = cli_ok(h, "abort", "app").stdout
    assert out.startswith("app  aborted  upstream backend  canary 0 %"), out
    assert "aborted by the operator" in out and "original files restored" in out
    assert h.site.config_files() == h.originals
    saved = h.assert_state_matches_files()
    assert (saved["state"], saved["canary_percent"], saved["snapshot_id"]) == ("aborted", "0", None)
    assert h.probe(100).versions == {"v1": 100}
    seen = load.finish()
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()
    assert non_check_events(h) == ["start", "step", "promote", "step", "abort", "restored"]
    abort = records(h, "abort")[0]
    assert abort["detail"]["reason"] == "aborted by the operator" and abort["detail"]["changed_outside"] == []
    assert records(h, "restored")[0]["detail"]["written"] is True

    again = h.cli("abort", "app")
    assert again.returncode == 2
    assert one_line_error(again) == "nginx-canary: error: rollout 'app' is aborted, nothing to abort"
    # An aborted rollout can run again, from a new snapshot of the same original files.
    status = h.start_rollout(step_interval=60.0)
    assert (status["state"], status["canary_percent"]) == ("progressing", 10)
    assert status["snapshot_id"] != records(h, "start")[0]["detail"]["snapshot_id"]
    assert h.call("abort", name="app")["state"] == "aborted"
    assert h.site.config_files() == h.originals


def test_a_paused_canary_that_fails_is_still_rolled_back(make_harness):
    # Documented in rollout.py: "pausing stops the stepping, never the protection".
    h = make_harness(steps=(10, 50, 100), step_interval="1s")
    load = h.load(rate=150)
    cli_ok(h, "start", "app", "--step-interval", "60s")
    cli_ok(h, "promote", "app")  # at 50 %: files differ from the originals
    h.wait_status(lambda s: (s["last_check"] or {}).get("verdict") == "pass", "a passing check")
    cli_ok(h, "pause", "app")
    h.v2.update(error_rate=1.0)

    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()
    assert final["state"] == "rolled_back", final["message"]
    assert final["last_check"]["verdict"] == "fail"
    assert h.site.config_files() == h.originals
    h.assert_state_matches_files()
    assert h.probe(100).versions == {"v1": 100}
    events = non_check_events(h)
    assert events == ["start", "step", "promote", "step", "pause", "rollback", "restored"]
    history = h.history()
    after_pause = history[[r["event"] for r in history].index("pause") + 1:]
    checks = [r for r in after_pause if r["event"] == "check"]
    assert len(checks) >= 2 and all(r["state"] == "paused" for r in checks)
    # The step's evidence still holds its clean minutes: the first checks after the change may pass.
    assert [r["detail"]["verdict"]["verdict"] for r in checks[-2:]] == ["fail", "fail"]
    assert records(h, "rollback")[0]["detail"]["reason"].startswith("2 consecutive failed checks")
    assert set(seen.versions_5xx) == {"v2"} and seen.socket_errors == 0
