"""Too little canary traffic to judge: the rollout waits at its step until min_requests canary requests came."""

from __future__ import annotations

import re
import time

from tests.daemon.conftest import WAIT, records


def test_too_little_traffic_waits_at_its_step(make_harness):
    # 20 req/s with the canary at 10 %: 2 canary requests a second, about 8 in the step's first 4 s, 20 needed.
    h = make_harness(steps=(10, 50, 100), step_interval="1s", analysis={"min_requests": 20})
    trickle = h.load(rate=20, concurrency=2)
    h.start_rollout()

    # Watch it for three bake times after its own bake time ran out: it must not move.
    deadline = time.monotonic() + WAIT
    while True:
        status, now = h.status_and_now()
        assert (status["state"], status["step"], status["canary_percent"]) == ("progressing", 0, 10), status
        check = status["last_check"]
        if check is not None:
            assert check["verdict"] == "inconclusive", check
        if check is not None and now - status["step_started_at"] >= 4 * status["step_interval"] \
                and check["at"] - status["step_started_at"] >= 4 * status["step_interval"]:
            break
        assert time.monotonic() < deadline, f"no check 4 s after the step began: {status}"
        time.sleep(0.1)
    assert status["time_left_in_step"] == 0  # the bake time is over; only the evidence is missing
    found = re.fullmatch(r"only (\d+) canary requests since the step began, need 20 \(about [0-9.]+ s at the "
                         r"current rate\)", check["reason"])
    assert found and 0 < int(found.group(1)) < 20, check["reason"]
    assert not any(c["verdict"] == "fail" for c in check["checks"])
    assert check["canary"]["requests"] < 20 and check["canary"]["errors_5xx"] == 0
    assert [r["event"] for r in h.history() if r["event"] != "check"] == ["start", "step"]
    assert {r["detail"]["verdict"]["verdict"] for r in records(h, "check")} == {"inconclusive"}

    # Enough traffic: the first pass moves it on, and it finishes.
    more = h.load(rate=200)
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = [trickle.finish(), more.finish()]
    assert final["state"] == "promoted", final["message"]
    steps = records(h, "step")
    assert [s["detail"]["to_percent"] for s in steps] == ["10", "50", "100"]
    history = h.history()
    before_second = [r for r in history[:history.index(steps[1])] if r["event"] == "check"]
    assert before_second[-1]["detail"]["verdict"]["verdict"] == "pass"
    assert before_second[-1]["detail"]["verdict"]["canary"]["requests"] >= 20
    assert all(s.status_5xx == 0 and s.socket_errors == 0 for s in seen), [s.summary() for s in seen]
