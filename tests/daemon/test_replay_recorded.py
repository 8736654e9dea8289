"""`replay` of a REAL run's access log reaches the outcome the live daemon reached (issue #12: done when).

Real daemon, real nginx, real apps: the access log written from the moment
the rollout starts is copied, then replayed with the daemon's own config.
Same final state, same step, and the decision within one check interval of
the live one (the replay starts its run at the first request, a few
milliseconds after the live ``start``; its step changes take no reload time),
plus how late the live loop ran its checks (a few ms): the live bake time
is measured between the wall-clock times of two checks, each woken a little
late, so a bake time that is a whole number of intervals (1 s here) ends on
the check it falls on or, about half the time, on the next one; the replay's
checks are on the dot, so it takes the first. The live decision then comes
at most one interval plus that lateness after the replay's: the live checks'
grid starts when ``start`` returns, before the replay's (the first request).

A healthy run is promoted through every step, the 100 % one included: a
step's evidence begins when its change begins (live, before nginx's reload;
in the replay, at its check), and with fewer than ``min_requests`` stable
requests the comparison with the baseline is skipped, not waited for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.daemon.conftest import records

INTERVAL = 0.25  # FAST_ANALYSIS's interval


def _recorded_run(make_harness: Any, tmp_path: Path, break_at_step: Optional[int],
                  **harness: Any) -> Tuple[Dict[str, Any], float, Path, Any]:
    """Run a rollout under load to its end; returns (final status, live decision time, the log's copy, harness).

    The canary answers 500 from the start (``break_at_step`` 0) or from the moment the run reaches that step
    (None: never; the run is promoted).
    """
    h = make_harness(v2={"error_rate": 1.0 if break_at_step == 0 else 0.0}, **harness)
    offset = h.site.access_log.stat().st_size if h.site.access_log.exists() else 0
    h.start_rollout()
    load = h.load(rate=150)
    if break_at_step:
        h.wait_step(break_at_step)
        h.v2.update(error_rate=1.0)
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed", timeout=35.0)
    time.sleep(2.0)  # the log goes on after the decision, as a real one does: the replay may decide a check later
    load.finish()
    decided = [r for r in h.history() if r["event"] in ("rollback", "promoted")]
    assert decided, h.events()
    copy = tmp_path / "recorded.log"
    with open(h.site.access_log, "rb") as fh:
        fh.seek(offset)
        copy.write_bytes(fh.read())
    return final, decided[-1]["time"], copy, h


def _replayed(h: Any, copy: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    done = h.cli("replay", str(copy), "--rollout", "app", "--json")
    assert done.returncode == 0, done.stderr
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    return objects[:-1], objects[-1]


@pytest.mark.parametrize("break_at_step", [0, 1, None],
                         ids=["broken-from-the-start", "broken-at-the-second-step", "healthy-promoted"])
def test_replay_of_a_real_run_reaches_the_live_outcome(make_harness: Any, tmp_path: Path,
                                                       break_at_step: Optional[int]) -> None:
    final, live_decided, copy, h = _recorded_run(make_harness, tmp_path, break_at_step, steps=(10, 50, 100),
                                                 step_interval="1s")
    events, summary = _replayed(h, copy)
    replay_decided = summary["log_start"] + (summary["decided_at"] or 0)
    started = records(h, "start")[0]["time"]
    assert (summary["state"], summary["step"] - 1) == (final["state"], final["step"]), (summary, final)
    late = h.call("status", name="app")["daemon"]["check_lateness_seconds"]["max"]
    assert abs(replay_decided - live_decided) <= INTERVAL + late, (replay_decided - started, live_decided - started,
                                                                  late, events)
