"""Someone else edits a managed file during a rollout: detected, the rollout pauses, the edit is never overwritten.

The edits are real config changes an operator might make by hand: a comment
and a ``max_fails``/``fail_timeout`` on the second stable server (in
``pool.inc``), and a note in ``upstream.conf``. After each, the rollout must
pause at its next check with the paths in the reason, keep the files exactly
as the editor left them while paused (several more checks), and a manual
``abort`` as well as an automatic rollback (the canary starts failing while
paused) must give the servers their start weights back *without* undoing the
edit (``weights_only`` restore).
"""

from __future__ import annotations

import time

from tests.reliability.conftest import disk_hashes, history, saved_state, temp_files
from tests.daemon.conftest import server_params

STEPS = (10, 50, 100)


def is_staged_down(params) -> bool:
    """``down`` as at start, with no ``weight=`` (restore_weights gives back the snapshot's form)."""
    return params == ["down"]


def first_step_applied(s) -> bool:
    return s["state"] == "progressing" and s["step_started_at"] is not None


def edit(path, old: str, new: str) -> bytes:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path.read_bytes()


def wait_drift_pause(h, path) -> dict:
    st = h.wait_state("paused", "rolled_back", "aborted", "failed", "promoted")
    assert st["state"] == "paused", st["message"]
    reason = st["paused_reason"]
    assert reason.startswith(f"config files changed outside nginx-canary: {path}"), reason
    assert [r["event"] for r in history(h.site)].count("drift") >= 1
    return st


def test_a_foreign_edit_pauses_and_survives_abort_and_rollback(rel_harness):
    h = rel_harness(steps=STEPS, step_interval="2s")
    site = h.site
    h.load(rate=150)

    # 1. An edit of pool.inc at the first step: paused at the next check.
    h.start_rollout()
    h.wait_status(first_step_applied, "the first step")
    v1b_line = f"server {site.v1b} weight=9;"
    edited = edit(site.pool_inc, v1b_line, f"server {site.v1b} weight=9 max_fails=3 fail_timeout=5s;")
    st = wait_drift_pause(h, site.pool_inc)
    assert st["canary_percent"] == 10
    # Paused, still checked, never written: the edit stays byte for byte over several checks.
    time.sleep(1.0)
    assert site.pool_inc.read_bytes() == edited
    assert h.status()["state"] == "paused"

    # abort: the start weights come back, the edit stays.
    assert h.cli("abort", "app").returncode == 0
    st = h.status()
    assert st["state"] == "aborted" and "keeping the edits" not in st["message"], st["message"]
    assert "edits made outside nginx-canary kept" in st["message"], st["message"]
    pool = site.pool_inc.read_text()
    assert "max_fails=3 fail_timeout=5s" in pool
    params = server_params(pool)
    assert params[site.v1b] == ["weight=2", "max_fails=3", "fail_timeout=5s"], pool
    assert is_staged_down(params[site.v2]), pool
    assert server_params(site.upstream_conf.read_text())[site.v1] == ["weight=2"]
    restored = [r for r in history(site) if r["event"] == "restored"][-1]
    assert restored["detail"]["weights_only"] is True
    saved = saved_state(site)
    assert disk_hashes(list(saved["expected_files"])) == saved["expected_files"]
    assert site.nginx_t().returncode == 0

    # 2. A new run (its snapshot holds the first edit); an edit of upstream.conf; then the canary fails
    #    while paused: the automatic rollback restores the weights and keeps both edits.
    h.start_rollout()
    h.wait_status(lambda s: first_step_applied(s) and s["started_at"] != st["started_at"], "the first step")
    note = "    # operator: v1 is being drained next week\n"
    text = site.upstream_conf.read_text()
    site.upstream_conf.write_text(text.replace("    include conf.d/pool.inc;\n", note + "    include conf.d/pool.inc;\n"))
    edited_upstream = site.upstream_conf.read_bytes()
    wait_drift_pause(h, site.upstream_conf)
    h.v2.update(error_rate=1.0)
    st = h.wait_state("rolled_back", "aborted", "failed", "promoted", timeout=30)
    assert st["state"] == "rolled_back", st["message"]
    assert "edits made outside nginx-canary kept" in st["message"], st["message"]
    upstream = site.upstream_conf.read_bytes()
    assert upstream == edited_upstream.replace(f"server {site.v1} weight=9;".encode(),
                                               f"server {site.v1} weight=2;".encode())
    assert note.encode() in upstream
    assert "max_fails=3 fail_timeout=5s" in site.pool_inc.read_text()
    assert is_staged_down(server_params(site.pool_inc.read_text())[site.v2])
    restored = [r for r in history(site) if r["event"] == "restored"][-1]
    assert restored["detail"]["weights_only"] is True
    assert temp_files(site) == []
    assert site.nginx_t().returncode == 0
    seen = h.probe(50)
    assert seen.versions == {"v1": 50}, seen.summary()


def test_an_edit_between_two_checks_pauses_at_once(rel_harness):
    """watchdog on the managed files' directories: the pause does not wait for the next check (10 s away here)."""
    h = rel_harness(steps=STEPS, step_interval="60s", analysis={"interval": "10s", "window": "20s"})
    site = h.site
    h.start_rollout()  # answered once the first step is applied; the first check is 10 s after that
    st = h.status()
    assert first_step_applied(st), st
    edited = edit(site.pool_inc, f"server {site.v1b} weight=9;", f"server {site.v1b} weight=9 max_fails=3;")
    edited_at = time.time()
    paused = h.wait_state("paused", "rolled_back", "aborted", "failed", "promoted", timeout=5)
    assert paused["state"] == "paused", paused["message"]
    assert paused["paused_reason"].startswith(f"config files changed outside nginx-canary: {site.pool_inc}")
    drift = [r for r in history(site) if r["event"] == "drift"]
    assert len(drift) == 1 and drift[0]["time"] - edited_at < 5
    assert [r for r in history(site) if r["event"] == "check"] == []  # no check ran: the watcher did it
    assert site.pool_inc.read_bytes() == edited
