"""A rollout whose access log mostly fails to parse pauses with the reason and a sample line: never "no traffic".

The rollout names a format (``log_format: upstreamlog``, from
tests/data/real-world/log-formats/upstreamlog.conf) other than the one nginx
writes to its log (``canary``): a user's slip that used to leave the rollout
at its first step, seeing no request, while the canary failed.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.daemon.conftest import non_check_events, records

UPSTREAMLOG = Path(__file__).resolve().parents[1] / "data" / "real-world" / "log-formats" / "upstreamlog.conf"
CANARY_LOG = "    access_log logs/access.log canary;"


def rollout_names_upstreamlog(h) -> None:
    """nginx learns the ``upstreamlog`` format but goes on writing ``canary``; the rollout names ``upstreamlog``."""
    h.site.conf.write_text(h.site.conf.read_text().replace(CANARY_LOG, f"    include {UPSTREAMLOG};\n{CANARY_LOG}"))
    h.site.nginx.reload()
    daemon_config = h.site.daemon_config.read_text()
    h.site.daemon_config.write_text(daemon_config.replace("    upstream: backend\n",
                                                          "    upstream: backend\n    log_format: upstreamlog\n"))


def test_a_log_in_another_format_pauses_the_rollout(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="1s", v2={"error_rate": 0.3}, daemon=False)
    rollout_names_upstreamlog(h)
    h.start_daemon()
    load = h.load(rate=100, duration=30)
    h.start_rollout()

    status = h.wait_state("paused", "rolled_back", "promoted", "failed")
    load.finish()
    assert (status["state"], status["step"]) == ("paused", 0), status["message"]
    reason = status["paused_reason"]
    assert f"lines of access log {h.site.access_log} do not fit log format 'upstreamlog'" in reason
    assert "e.g. '" in reason and "\\x09" in reason  # a sample: a line of the canary format, its tabs shown
    assert status["message"].startswith("paused at ") and reason in status["message"]
    assert non_check_events(h)[-1] == "log_unparsed"
    record = records(h, "log_unparsed")[0]
    assert record["detail"]["reason"] == reason and record["state"] == "paused"
    # It stays paused (checks go on, no step is taken) until someone looks.
    h.wait_status(lambda s: s["state"] == "paused" and s["step"] == 0, "still paused")


def test_after_the_format_is_fixed_a_resume_goes_on_at_once(make_harness):
    """nginx is made to write the format the rollout names, then resume: the lines read while paused do not count."""
    h = make_harness(steps=(10, 50, 100), step_interval="1s", daemon=False)
    rollout_names_upstreamlog(h)
    h.start_daemon()
    load = h.load(rate=100, duration=40)
    h.start_rollout()
    h.wait_state("paused")
    time.sleep(3)  # hundreds more misfits read while paused
    h.site.conf.write_text(h.site.conf.read_text().replace(CANARY_LOG, "    access_log logs/access.log upstreamlog;"))
    h.site.nginx.reload()  # returns once the workers writing the old format have left
    h.call("resume", name="app")

    status = h.wait_state("promoted", "paused", "rolled_back", "failed")
    load.finish()
    assert status["state"] == "promoted", status["message"]
    assert len(records(h, "log_unparsed")) == 1
