"""A resume (or a start) judges the access log's fit on the lines read from then on, not on those read before.

The rollout paused because its log's lines did not fit the format; the lines
read while it stayed paused (until the operator fixed the format) must not
pause it again once resumed, and good lines must not have to outnumber them.
Real :class:`LogTraffic` on a file, the state machine's fakes for the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple


from nginx_canary.daemon.commands import CommandHandlers
from nginx_canary.daemon.runtime import RolloutRuntime, RunTraffic
from nginx_canary.logs.health import MIN_UNPARSED
from nginx_canary.logs.live import LogTraffic
from nginx_canary.report.series import SeriesRecorder
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.store import StateStore
from tests.daemon.test_commands import Host
from tests.logs.test_health import traffic  # noqa: F401 (a fixture: a real LogTraffic on a file)
from tests.logs.test_live import flood_line
from tests.rollout.test_machine import T0, FakeApplier, FakeGates, make_settings

JUNK = b'10.0.0.1 - - [x] "GET / HTTP/1.1" 200 5\n'


def daemon_of(tmp_path: Path, live: LogTraffic, gates: FakeGates = None) -> Tuple[Host, CommandHandlers, Rollout]:
    host = Host(StateStore(str(tmp_path / "state"), clock=lambda: T0))
    run_traffic = RunTraffic(live)
    rollout = Rollout(make_settings(upstream="backend", canary=("127.0.0.1:8082",)), host.store, FakeApplier(),
                      run_traffic, log_trouble=run_traffic.unparsed_reason, gates=gates)
    host.runtimes["app"] = RolloutRuntime(rollout, run_traffic, SeriesRecorder(str(tmp_path / "state"), "app"))
    return host, CommandHandlers(host), rollout


def read(live: LogTraffic, log: Path, data: bytes, now: float) -> None:
    with open(log, "ab") as fh:
        fh.write(data)
    live.poll(now)


def test_a_resumed_rollout_is_judged_on_the_lines_read_since(tmp_path, traffic):
    live, log = traffic
    host, commands, rollout = daemon_of(tmp_path, live)
    commands.execute("start", {"name": "app"})
    read(live, log, JUNK * 30, T0 + 1)
    rollout.tick(T0 + 1)
    assert rollout.state.state == "paused" and rollout.state.paused_reason.startswith("30 of 30 lines")
    # Still the wrong format for a while: read while paused, never judged.
    read(live, log, JUNK * 500, T0 + 2)
    rollout.tick(T0 + 2)
    host.now = T0 + 3
    assert commands.execute("resume", {"name": "app"})["state"] == "progressing"
    # Fixed: a few good lines are enough (before the fix, 500 misfits outnumbered them and paused it again).
    read(live, log, b"".join(flood_line(n) for n in range(20)), T0 + 4)
    rollout.tick(T0 + 4)
    assert rollout.state.state == "progressing", rollout.state.paused_reason
    # And misfits read after the resume still pause it.
    read(live, log, JUNK * MIN_UNPARSED * 3, T0 + 5)
    rollout.tick(T0 + 5)
    assert rollout.state.state == "paused" and rollout.state.paused_reason.startswith("30 of 50 lines")


def test_a_start_forgets_the_misfits_read_before_it(tmp_path, traffic):
    live, log = traffic
    gates = FakeGates(pre_rollout="pending")  # no step is applied yet: only the start itself begins a fresh count
    host, commands, rollout = daemon_of(tmp_path, live, gates)
    read(live, log, JUNK * 300, T0 - 10)  # between runs: nobody asked
    commands.execute("start", {"name": "app"})
    read(live, log, b"".join(flood_line(n) for n in range(20)), T0 + 1)
    rollout.tick(T0 + 1)
    assert (rollout.state.state, rollout.state.gate) == ("progressing", "pre_rollout"), rollout.state.paused_reason
