"""A slow step change (nginx slow to take its reload) does not stop the checks: a canary failing meanwhile is caught.

The daemon runs with ``NGINX_CANARY_FAULTS=after_reload=stall:3@1``: the first
step change signals the reload, then takes 3 s more before it is done (as an
nginx slow to start its new workers on a loaded host would). The canary
answers 500 to everything, so its failures are in the access log from the
moment the reload gives it traffic. Step changes run on the daemon's worker
thread while the loop goes on checking; so:

* failed checks are recorded *during* the step change (between the ``start``
  record and the ``step`` record, which is stamped when the change finished),
  and counted in the failure streak;
* the rollback follows the step change at once, on the streak those checks
  built (no fresh check in between), and restores the files byte for byte.

On a loop that ran step changes itself, no check could run in those 3 s.
"""

from __future__ import annotations

from tests.reliability.conftest import Steps, history, launch, wait_ready

STEPS = (10, 50, 100)
STALL = 3.0


def test_checks_go_on_during_a_slow_step_change_and_the_rollback_follows_it(rel_harness):
    h = rel_harness(steps=STEPS, step_interval="1s", v2={"error_rate": 1.0}, daemon=False)
    steps = Steps(h.site, STEPS)
    launch(h, f"after_reload=stall:{STALL:g}@1")
    assert wait_ready(h), h.daemon_log()
    load = h.load(rate=150)
    h.start_rollout()  # answered once the first step change is done, 3 s after its reload

    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()
    assert final["state"] == "rolled_back", final["message"]

    records = history(h.site)
    events = [r["event"] for r in records if r["event"] != "check"]
    assert events == ["start", "step", "rollback", "restored"], events
    started = next(r["time"] for r in records if r["event"] == "start")
    stepped = next(r for r in records if r["event"] == "step")
    assert stepped["time"] - started >= STALL  # the change really was slow
    during = [r for r in records if r["event"] == "check" and started < r["time"] < stepped["time"]]
    fails = [r for r in during if r["detail"]["verdict"]["verdict"] == "fail"]
    assert len(fails) >= 2, f"checks during the step change: {during}"
    assert [r["detail"]["failure_streak"] for r in fails][:2] == [1, 2]
    assert fails[0]["canary_percent"] == "10" and fails[0]["detail"]["verdict"]["canary"]["errors_5xx"] > 0

    rollback = next(r for r in records if r["event"] == "rollback")
    assert rollback["time"] >= stepped["time"]
    # Acted on the streak the checks during the change built: no fresh check was judged in between.
    between = [r for r in records if r["event"] == "check" and stepped["time"] <= r["time"] <= rollback["time"]]
    assert between == [], between
    assert rollback["detail"]["reason"].startswith(f"{fails[-1]['detail']['failure_streak']} consecutive failed checks")
    assert "consecutive failed checks (failure_threshold 2)" in rollback["detail"]["reason"]
    assert steps.whole() == "snapshot" and h.site.config_files() == h.originals
    assert h.site.nginx_t().returncode == 0
    after = h.probe(50)
    assert after.versions == {"v1": 50}, after.summary()
    assert seen.socket_errors == 0, seen.summary()
