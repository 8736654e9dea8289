"""nginx misbehaves under a running rollout: each fault has a defined outcome, and nothing is lost.

* ``nginx -t`` starts failing (someone adds a broken file to ``conf.d``): the
  step change is undone, the rollout pauses at the step that passed with
  nginx's message in ``status`` and the history; the files stay byte-identical
  to that step; resume after the fix goes on.
* The reload does not take effect (a new ``listen`` in another file, on a
  port another process holds): same outcome, the reason names the reload.
* The master dies: a step change meanwhile pauses the rollout ("not
  running"); nginx started again (new PID) and resume go on. Killed and
  restarted between two step changes: the rollout goes on by itself.
* nginx not running at ``start``: exit 3, the run ends ``rolled_back`` having
  changed nothing.
"""

from __future__ import annotations

import socket

from tests.reliability.conftest import Steps, disk_hashes, history, saved_state, temp_files

STEPS = (10, 50, 100)


def at_first_step(s) -> bool:
    return s["state"] == "progressing" and s["step"] == 0 and s["step_started_at"] is not None


def assert_paused_at_first_step_with(h, steps: Steps, *words: str):
    """Paused at 10 %, the reason (in status and history) holding ``words``; files and state at step 10."""
    st = h.wait_state("paused", "rolled_back", "aborted", "failed", "promoted")
    assert st["state"] == "paused", st["message"]
    assert (st["step"], st["canary_percent"]) == (0, 10), st
    reason = st["paused_reason"]
    assert reason.startswith("could not apply step 2 of 3 (50 %): "), reason
    for word in words:
        assert word in reason, reason
    records = history(h.site)
    failed = [r for r in records if r["event"] == "apply_failed"]
    assert len(failed) == 1 and all(w in failed[0]["detail"]["error"] for w in words), failed
    pauses = [r for r in records if r["event"] == "pause"]
    assert len(pauses) == 1 and pauses[0]["detail"]["reason"] == reason, pauses
    # Nothing lost: the files are the first step's, byte for byte, and the state says so.
    assert steps.whole() == "10"
    saved = saved_state(h.site)
    assert saved["state"] == "paused" and disk_hashes(list(saved["expected_files"])) == saved["expected_files"]
    assert saved["expected_files"] == steps.hashes("10")
    assert not (h.site.state_dir / "journal.json").exists() and temp_files(h.site) == []
    # nginx still serves the step that passed.
    seen = h.probe(200)
    assert seen.status_2xx == 200 and 0 < seen.versions.get("v2", 0) < 60, seen.summary()
    return st


def resume_and_finish(h, steps: Steps):
    st = h.call("resume", name="app")
    assert st["state"] == "progressing", st
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed", timeout=30)
    assert final["state"] == "promoted", final["message"]
    assert steps.whole() == "snapshot"  # on_success: restore
    assert h.site.nginx_t().returncode == 0
    return final


def test_nginx_t_starts_failing_mid_rollout(rel_harness):
    h = rel_harness(steps=STEPS, step_interval="1s")
    steps = Steps(h.site, STEPS)
    load = h.load(rate=150)
    h.start_rollout()
    h.wait_status(at_first_step, "the first step")
    broken = h.site.prefix / "conf.d" / "zz-broken.conf"
    broken.write_text("server { listen 127.0.0.1:1; client_max_body_size not-a-size; }\n")
    assert h.site.nginx_t().returncode != 0

    st = assert_paused_at_first_step_with(h, steps, "nginx -t", "client_max_body_size")
    assert "resume tries again, abort restores the snapshot" in st["paused_reason"]
    broken.unlink()
    resume_and_finish(h, steps)
    seen = load.finish()
    assert seen.socket_errors == 0 and seen.status_5xx == 0, seen.summary()


def test_a_reload_that_does_not_take_effect(rel_harness):
    h = rel_harness(steps=STEPS, step_interval="1s")
    steps = Steps(h.site, STEPS)
    load = h.load(rate=150)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    extra = h.site.prefix / "conf.d" / "zz-extra.conf"
    try:
        h.start_rollout()
        h.wait_status(at_first_step, "the first step")
        extra.write_text(f"server {{ listen 127.0.0.1:{port}; return 200 \"extra\\n\"; }}\n")
        assert h.site.nginx_t().returncode == 0  # nginx -t does not bind: only the reload fails

        assert_paused_at_first_step_with(h, steps, "reload failed", "Address already in use")
        error_log = h.site.error_log.read_text(errors="replace")
        assert f"bind() to 127.0.0.1:{port} failed" in error_log
    finally:
        holder.close()
    resume_and_finish(h, steps)
    seen = load.finish()
    assert seen.socket_errors == 0 and seen.status_5xx == 0, seen.summary()
    extra.unlink()


def test_the_master_dies_and_is_started_again(rel_harness):
    # Checks keep passing on the step's evidence gathered before nginx went down, so the bake time's
    # end meets a dead nginx at the step change (rather than waiting for traffic). The bake time is
    # long enough for the first step to pass (about 50 canary requests) before it ends.
    h = rel_harness(steps=STEPS, step_interval="6s")
    steps = Steps(h.site, STEPS)
    h.load(rate=150)
    h.start_rollout()
    h.wait_status(lambda s: at_first_step(s) and (s["last_check"] or {}).get("verdict") == "pass",
                  "a passing check at the first step")

    # 1. Dead at the next step change: paused with the reason, files at the step that passed.
    first = h.site.nginx_pid()
    h.site.kill_nginx()
    st = h.wait_state("paused", "rolled_back", "aborted", "failed", "promoted")
    assert st["state"] == "paused" and st["step"] == 0, st["message"]
    assert "not running" in st["paused_reason"] or "no nginx master" in st["paused_reason"], st["paused_reason"]
    assert steps.whole() == "10"
    assert saved_state(h.site)["expected_files"] == steps.hashes("10")
    assert [r["event"] for r in history(h.site)].count("apply_failed") == 1

    # 2. nginx starts again from the files as they are (the first step's): a new master; resume goes on.
    h.site.start_nginx()
    second = h.site.nginx_pid()
    assert second not in (None, first)
    assert h.call("resume", name="app")["state"] == "progressing"
    h.wait_status(lambda s: s["step"] == 1 and s["step_started_at"] is not None or s["state"] != "progressing",
                  "the second step")

    # 3. Killed and restarted between two step changes: the rollout goes on by itself, no pause.
    h.site.kill_nginx()
    h.site.start_nginx()
    third = h.site.nginx_pid()
    assert third not in (None, first, second)
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed", "paused", timeout=30)
    assert final["state"] == "promoted", final["message"]
    events = [r["event"] for r in history(h.site)]
    assert events.count("pause") == 1 and events.count("apply_failed") == 1, events
    assert [r["detail"]["to_percent"] for r in history(h.site) if r["event"] == "step"] == ["10", "50", "100"]
    assert steps.whole() == "snapshot"
    assert h.site.nginx_t().returncode == 0


def test_nginx_not_running_at_start(rel_harness):
    h = rel_harness(steps=STEPS, daemon=False)
    steps = Steps(h.site, STEPS)
    h.site.stop_nginx()
    h.start_daemon()
    before = h.site.config_files()

    result = h.cli("start", "app")
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "not running" in lines[0], result.stderr
    st = h.status()
    assert st["state"] == "rolled_back" and st["canary_percent"] == 0, st
    assert "could not apply step 1 of 3 (10 %)" in st["message"] and "not running" in st["message"], st["message"]
    assert h.site.config_files() == before
    assert steps.whole() == "snapshot"
    saved = saved_state(h.site)
    assert saved["state"] == "rolled_back" and saved["snapshot_id"] is None
    assert disk_hashes(list(saved["expected_files"])) == saved["expected_files"]
    # (a check may run while the first step change is under way: checks go on beside it)
    events = [r["event"] for r in history(h.site) if r["event"] != "check"]
    assert events == ["start", "apply_failed", "rollback", "restored"], events
    assert history(h.site)[-1]["detail"]["written"] is False
    assert not (h.site.state_dir / "journal.json").exists() and temp_files(h.site) == []
