"""Fleet rollouts end to end (issue #13's done-when): 3 real nginx hosts, their real daemons, a real etcd.

Everything on loopback from one temp dir (the fleet tour's set-up, nginx_canary/demo/fleet_tour.py): three
nginx hosts lb-1..3 in front of the same v1/v2 demo apps, one ``nginx-canary daemon`` per host with the
same ``fleet:`` section, ``--rate`` req/s of load through each host (each scenario sends its own, so its
clients' figures are its own). The rollouts use the daemon's default analysis settings but for
``interval: 250ms`` (``--fast`` uses the demo's loosened ones). Scenarios, in this order:

1. ``healthy``: v2 healthy, ``start`` on lb-2: promoted? the largest gap in steps between two hosts'
   upstream files, read every 20 ms (the files are what nginx serves: the barrier's proof).
2. ``etcd-frozen``: v2 healthy, ``start``; once every host applied the second step, etcd gets SIGSTOP for
   ``--freeze`` s: does any host's file change meanwhile? Then SIGCONT: is the rollout promoted, and did
   any client request fail (5xx or socket error) during the whole scenario?
3. ``coordinator-killed``: v2 healthy, ``start`` on lb-1; at the second step the coordinator's daemon is
   SIGKILLed and started again once another daemon coordinates: promoted on every host?
4. ``broken-start`` x ``--runs``: v2 answers every request with 500 from its first; ``start`` on lb-3;
   seconds from ``start`` returning to the moment every host's files are byte-identical to before the run
   (files read every 5 ms), and to every host having reported ``restored``.

Prints figures, asserts nothing. Every wait is bounded (``RUN_TIMEOUT`` per rollout).

Usage: .venv/bin/python bench/bench_fleet_rollout.py [--runs 5] [--rate 100] [--freeze 10] [--fast]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nginx_canary.demo.fleet_tour import ANALYSIS, HOSTS, RUN_TIMEOUT, FleetTour  # noqa: E402
from nginx_canary.demo.load import LoadResult, run_load  # noqa: E402

DEFAULTS_FAST_CLOCK: Dict[str, object] = {"interval": "250ms"}
STEP_INTERVAL = "5s"


class ScenarioLoad:
    """``rate`` req/s through every host until :meth:`finish`; what the clients saw, summed."""

    def __init__(self, tour: FleetTour, rate: float, seconds: float = 120.0) -> None:
        self.stop = threading.Event()
        self.results: List[LoadResult] = []
        self.threads = [threading.Thread(target=self._send, args=(site.url, rate, seconds), daemon=True)
                        for site in tour.sites.values()]
        for thread in self.threads:
            thread.start()

    def _send(self, url: str, rate: float, seconds: float) -> None:
        self.results.append(run_load(url, rate=rate, duration=seconds, max_requests=int(rate * seconds),
                                     concurrency=4, timeout=5.0, stop_event=self.stop))

    def finish(self) -> Dict[str, int]:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        return {"responses": sum(r.responses for r in self.results),
                "5xx": sum(r.status_5xx for r in self.results),
                "failed": sum(r.socket_errors + r.status_other for r in self.results)}


def wait_for(tour: FleetTour, predicate, timeout: float = RUN_TIMEOUT) -> Optional[Dict[str, Any]]:
    """Poll lb-1..3's status (whichever answers) until ``predicate(status)``; the status, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host in tour._alive():
            try:
                status = tour._status(host)
            except Exception:  # noqa: BLE001 - a daemon between kill and restart: ask another
                continue
            if predicate(status):
                return status
            break
        time.sleep(0.05)
    return None


def settled(status: Dict[str, Any], state: str, report: str) -> bool:
    hosts = (status.get("fleet") or {}).get("hosts") or {}
    return status.get("state") == state and len(hosts) == len(HOSTS) and \
        all(r.get("status") == report for r in hosts.values())


def healthy(tour: FleetTour, rate: float) -> Dict[str, Any]:
    load = ScenarioLoad(tour, rate)
    outcome = tour._rollout("healthy", "lb-2")
    seen = load.finish()
    tour._stage_v2_down()
    return {"state": outcome.state, "seconds": round(outcome.seconds, 2), "max_step_gap": outcome.max_spread,
            "clients": seen}


def etcd_frozen(tour: FleetTour, rate: float, freeze: float) -> Dict[str, Any]:
    assert tour.etcd is not None and tour.files is not None
    load = ScenarioLoad(tour, rate)
    tour.files.reset()
    tour._call("lb-1", "start", name="app")
    at_step = wait_for(tour, lambda s: s.get("step") == 1 and (s.get("fleet") or {}).get("plan", {}).get("barrier_at"))
    result: Dict[str, Any] = {"reached_second_step": at_step is not None}
    before = {h: s.upstream_conf.read_bytes() for h, s in tour.sites.items()}
    changed: List[str] = []
    tour.etcd.pause()
    try:
        deadline = time.monotonic() + freeze
        while time.monotonic() < deadline:
            changed += [h for h, s in tour.sites.items() if s.upstream_conf.read_bytes() != before[h]]
            time.sleep(0.02)
    finally:
        tour.etcd.resume()
    thawed = time.monotonic()
    done = wait_for(tour, lambda s: settled(s, "promoted", "promoted"), RUN_TIMEOUT + freeze)
    result.update(hosts_changed_while_frozen=sorted(set(changed)), promoted=done is not None,
                  seconds_after_thaw=round(time.monotonic() - thawed, 2), clients=load.finish(),
                  max_step_gap=tour.files.max_spread)
    tour._stage_v2_down()
    return result


def coordinator_killed(tour: FleetTour, rate: float) -> Dict[str, Any]:
    load = ScenarioLoad(tour, rate)
    outcome = tour._rollout("coordinator killed", "lb-1", kill_at_step=1)
    seen = load.finish()
    tour._stage_v2_down()
    return {"state": outcome.state, "killed": outcome.killed, "takeover": outcome.takeover,
            "takeover_seconds_after_kill": None if outcome.takeover_at is None or outcome.killed_at is None
            else round(outcome.takeover_at - outcome.killed_at, 2),
            "hosts_promoted": outcome.hosts_ending("promoted"), "max_step_gap": outcome.max_spread, "clients": seen}


def broken_start(tour: FleetTour, rate: float, runs: int) -> Dict[str, Any]:
    tour.apps["v2"].update(error_rate=1.0)
    files_back: List[float] = []
    reported: List[float] = []
    for _ in range(runs):
        load = ScenarioLoad(tour, rate)
        time.sleep(1.0)
        originals = {h: s.config_files() for h, s in tour.sites.items()}
        tour._call("lb-3", "start", name="app")
        returned = time.monotonic()
        deadline = returned + RUN_TIMEOUT
        seen_change = False
        while time.monotonic() < deadline:
            now = {h: s.config_files() for h, s in tour.sites.items()}
            if now != originals:
                seen_change = True
            elif seen_change:
                files_back.append(time.monotonic() - returned)
                break
            time.sleep(0.005)
        done = wait_for(tour, lambda s: settled(s, "rolled_back", "restored"))
        if done is not None:
            reported.append(time.monotonic() - returned)
        load.finish()
    tour.apps["v2"].update(error_rate=0.0)

    def stats(values: List[float]) -> Dict[str, Any]:
        return {"runs": len(values), "p50": round(statistics.median(values), 3) if values else None,
                "all": [round(v, 3) for v in values]}
    return {"files_identical_after_start_returns": stats(files_back), "all_reported_restored": stats(reported)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="broken-start runs (default 5)")
    parser.add_argument("--rate", type=float, default=100.0, help="req/s through each host (default 100)")
    parser.add_argument("--freeze", type=float, default=10.0, help="seconds etcd stays SIGSTOPped (default 10)")
    parser.add_argument("--fast", action="store_true", help="the demo's loosened analysis instead of the defaults")
    parser.add_argument("--json", metavar="FILE", help="also write the figures there")
    args = parser.parse_args(argv)
    analysis = dict(ANALYSIS) if args.fast else dict(DEFAULTS_FAST_CLOCK)
    tour = FleetTour(sys.stderr, step_interval=STEP_INTERVAL, analysis=analysis, load_rate=0)
    figures: Dict[str, Any] = {"hosts": len(HOSTS), "rate_per_host": args.rate, "step_interval": STEP_INTERVAL,
                               "analysis": analysis}
    try:
        tour.setup()
        time.sleep(1.0)
        figures["healthy"] = healthy(tour, args.rate)
        figures["etcd_frozen"] = etcd_frozen(tour, args.rate, args.freeze)
        figures["coordinator_killed"] = coordinator_killed(tour, args.rate)
        figures["broken_start"] = broken_start(tour, args.rate, args.runs)
    finally:
        tour.teardown()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
