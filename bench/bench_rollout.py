#!/usr/bin/env python3
"""Rollout daemon benchmarks (issues #4, #12): time to rollback, errors caused by stepping, overhead, judge verdicts.

Each benchmark runs a real nginx from a private prefix on free loopback ports
(nginx_canary.demo.site.DemoSite), the daemon as a subprocess of this same
interpreter (``python -m nginx_canary ... daemon``) and real load, and runs
next to its baseline in the same invocation:

rollback  Load from run_load (``--rate``, default 220 req/s) through nginx to two
          DemoApp backends, each in its own process (v1 stable, v2 canary).
          Rollout ``app`` with steps [10, 100] and a one-hour step interval,
          so it stays at 10 %; analysis
          interval 250ms, window 10s, min_requests 20, failure_threshold 2.
          Once the rollout has been at 10 % for ``--bake`` seconds (default 12:
          the 10 s window is full of healthy canary traffic) and its last check
          passed, T0 = the moment just before v2 is switched to 100 % 5xx
          (POST /__admin {"error_rate": 1.0}). This process then polls every 2 ms
          until the restored config is live: the upstream file holds its
          original bytes again AND a worker that was not there at T0 holds the
          listening socket AND no worker of T0 still holds it (read from
          /proc/PID/fd against the LISTEN inode in /proc/net/tcp). Reported per
          run, then p50 and max over ``--runs`` runs (default 5): T0 -> live;
          T0 -> first failed check and T0 -> rollback decision (from the
          daemon's history, rollouts/app.history.jsonl); decision -> file
          restored and decision -> live (observed here); T0 -> the last 5xx
          nginx logged (``$msec`` of the access log) and the 5xx clients got.
          A run whose healthy canary is rolled back before T0 (a false
          positive of the checks) is counted, reported and repeated.
          Baseline: the same poll measures ``nginx -s reload``'s equivalent
          (SIGHUP to the master, new generation live) on the same nginx, i.e.
          what any restore-and-reload costs without detection.
stepping  A separate backend nginx serves ``return 200 "v1"`` / ``"v2"`` on the
          site's v1/v2 ports, so the proxy nginx is what saturates. wrk
          (``-t1 -c8 -d20s`` by default, loopback) runs three times: no
          rollout; a full rollout 1 -> 2 -> 5 -> 10 -> 20 -> 50 -> 100 of the
          healthy canary (step_interval 1s) started 1 s into the run, which
          must be promoted before wrk ends; and plain SIGHUP reloads of nginx
          at the rollout's step times (what any reload costs). Counted: wrk's
          non-2xx/3xx answers (status > 399) and socket errors (connect, read,
          write, timeout) from bench/wrk_report.lua, and the statuses nginx
          logged in the access log over the run (499 = wrk closing its
          connections at its deadline, not an answer; left out of non-2xx).
overhead  Same two nginx instances, wrk for ``--overhead-duration`` s (default
          20): baseline with the rollout idle (the daemon still follows the
          log), then with a rollout progressing (steps 1 .. 100, step interval
          duration / 8, so it steps through the whole run). Daemon CPU
          seconds (its own; with its ``nginx -t`` children in brackets), split
          into its main thread and its other threads, over proxy nginx worker
          CPU seconds: live workers' times plus the master's reaped-children
          times (workers that exit on reload count); daemon RSS sampled every
          0.25 s (start, middle, end, max); access-log lines written per
          second; whole-machine CPU busy. Runs once per ``--log-format``
          (default ``canary``; or the stem of a file of
          tests/data/real-world/log-formats, e.g. json_elk, json_loki), each
          with its own nginx and daemon: nginx writes its access log in that
          format (the file's log_format directive, escape= included) and the
          daemon's config names it (``log_format``). The daemon serves metrics
          (``metrics_listen``), read after each run, outside the measured
          window: the run fails unless the daemon parsed >= 99 % of the
          run's lines and counted as many upstream attempts, and (stepping)
          counted canary attempts and took at least 2 steps: a daemon that
          parsed nothing would show a fake-low overhead.
broken-start  Issue #12: a canary broken from the start. Load from run_load at 200
          req/s; v2 answers 500 to every request from the first; rollout ``app``
          with steps [10, 100], analysis at its defaults but interval 250ms.
          T0 = ``nginx-canary start app`` (a separate CLI process, as a user
          runs it) seen to exit. Polled every 2 ms from before the call: the
          upstream file changed by the step, then holding its original bytes
          again, then live: a worker holds the listening socket and none that
          does was there before the file was restored (rollback's criterion,
          without needing T0 to come first: the restore can beat the CLI's
          exit, and then the figure is negative). Also from the history: T0 ->
          rollback decision and T0 -> 'restored' record, and 10 % step applied
          (its history record) -> live. p50 and max over ``--runs`` runs, one nginx
          and one daemon for all. Runs rollback as well and prints both figures
          side by side (a canary broken from its first request vs one that
          breaks after a healthy window).
healthy   Issue #12: a canary exactly as healthy as stable (both apps answer 2 %
          of requests with 500, spread evenly), 200 req/s, steps [10, 25, 50,
          100], step_interval 15s, analysis at its defaults (interval 1s),
          on_success restore so that one nginx and one daemon serve every run.
          ``--healthy-runs`` rollouts (default 20), each to its end; one still
          running after ``--healthy-cap`` s (default 360) is aborted and counted
          undecided. Reported: rollbacks (target 0 of 20, with their reasons),
          promotions, undecided; start -> promoted p50 and max; per step, the
          time beyond the 15 s bake spent waiting for evidence, and for a step
          that waited the last "inconclusive" reason the history kept (it
          records a check when the verdict changes, not every check).

It prints figures only; nothing is asserted. Targets, for context: rollback
p50 <= 1 s; stepping zero non-2xx and zero socket errors; overhead ratio <=
0.05 with RSS flat; broken-start p50 <= 1 s; healthy 0 rollbacks in 20.

Usage (a non-editable install gives figures as users see them)::

    python3 -m venv /tmp/vbr && /tmp/vbr/bin/pip install .
    PATH=/usr/sbin:$PATH /tmp/vbr/bin/python bench/bench_rollout.py \\
        [--runs 5] [--only rollback,broken-start,stepping,overhead,healthy] [--healthy-runs 20] [--json FILE]
        [--log-format canary,json_elk,json_loki]

Needs nginx and wrk (``make bench`` installs both on Debian as root) and
psutil. Every load is bounded in requests and time, loopback only; every
process started here (daemon, nginx instances, demo apps, wrk) is stopped on
exit, error or Ctrl-C.
Shared helpers (processes, nginx observation, load) live in bench/rollout_harness.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import psutil

from nginx_canary.demo.load import run_load
from nginx_canary.demo.site import DemoSite

from nginx_canary.demo.nginx_harness import free_port

from rollout_harness import (LIVE_TIMEOUT, AppProcess, Backend, BackgroundLoad, BenchError, Daemon, cli_start,
                             count_lines, daemon_counts, describe_machine, last_5xx_logged, listen_inodes,
                             log_format_names, log_statuses, ms, nginx_cpu, new_site, p50, read_log_from, run_wrk,
                             start_daemon, start_nginx, use_log_format, wait_generation_settled, wait_live,
                             watch_restore, worker_pids, write_site)

ROLLBACK_ANALYSIS = {"interval": "250ms", "window": "10s", "min_requests": 20, "failure_threshold": 2}
FULL_STEPS = [1, 2, 5, 10, 20, 50, 100]
READY_TIMEOUT = 60.0        # rollout at 10 % with a passing check, at most
RSS_EVERY = 0.25
MAX_FALSE_ROLLBACKS = 5     # healthy canary rolled back before T0: repeat the run at most this many times
ISSUE_RATE = 200.0          # broken-start and healthy: the load of issue #12's measurements, req/s
BROKEN_START_ANALYSIS = {"interval": "250ms"}   # every other analysis key at its default
HEALTHY_ANALYSIS = {"interval": "1s"}           # the default, written out
HEALTHY_STEPS = [10, 25, 50, 100]
HEALTHY_STEP_INTERVAL = 15.0
HEALTHY_ERROR_RATE = 0.02   # both apps: exactly 1 request in 50 answers 500 (the demo app spreads them evenly)
END_STATES = ("promoted", "rolled_back", "aborted", "failed")
BENCHES = ("rollback", "broken-start", "stepping", "overhead", "healthy")   # the order they run in


def log(msg: str = "") -> None:
    print(msg, file=OUT, flush=True)


OUT = sys.stdout


class FalseRollback(BenchError):
    """The healthy canary was rolled back before T0: the run measures nothing and is repeated."""


# -- 1. time to rollback -------------------------------------------------------------------

def bench_rollback(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    log(f"== 1. time to rollback: {args.runs} runs, load {args.rate:g} req/s (run_load), canary 10 %, "
        f"analysis {ROLLBACK_ANALYSIS}, T0 after {args.bake:g} s at 10 % with a passing check")
    with contextlib.ExitStack() as stack:
        site = new_site(stack, nginx_bin, args.workers, "rollback")
        site.write(steps=[10, 100], step_interval="3600s", analysis=dict(ROLLBACK_ANALYSIS))
        v1 = AppProcess(python, "v1", site.ports["v1"], site.root)
        stack.callback(v1.stop)
        v2 = AppProcess(python, "v2", site.ports["v2"], site.root)
        stack.callback(v2.stop)
        master = start_nginx(stack, site)
        original = site.upstream_conf.read_bytes()
        inodes = listen_inodes(site.ports["front"])
        if not inodes:
            raise BenchError("cannot find nginx's listening socket in /proc/net/tcp")
        daemon = start_daemon(stack, site, python)

        # Baseline: the reload alone (SIGHUP to the master, new generation live), on the same nginx and load.
        baseline: List[float] = []
        stop = threading.Event()
        holder: Dict[str, Any] = {}
        loader = threading.Thread(target=lambda: holder.setdefault("r", run_load(
            site.url, rate=args.rate, duration=30.0, max_requests=int(args.rate * 30) + 1, stop_event=stop)),
            daemon=True)
        loader.start()
        try:
            time.sleep(1.0)
            for _ in range(args.runs):
                before = worker_pids(master)
                t0 = time.time()
                os.kill(master, signal.SIGHUP)
                _, t_live, _ = wait_live(original, site.upstream_conf, master, before, inodes, t0)
                if t_live is None:
                    raise BenchError("baseline reload did not go live")
                baseline.append(t_live - t0)
                wait_generation_settled(master, site.workers)
                time.sleep(0.3)
        finally:
            stop.set()
            loader.join(45)
        log("   baseline, SIGHUP -> new generation live (same poll): "
            + ", ".join(ms(x) for x in baseline) + f" ms; p50 {ms(p50(baseline))}, max {ms(max(baseline))}")

        runs: List[Dict[str, Any]] = []
        false_rollbacks: List[str] = []
        attempts = 0
        while len(runs) < args.runs:
            attempts += 1
            if attempts > args.runs + MAX_FALSE_ROLLBACKS:
                raise BenchError(f"{len(false_rollbacks)} false rollbacks of the healthy canary before T0; "
                                 f"giving up: {false_rollbacks[-1]}")
            try:
                runs.append(_one_rollback(args, site, daemon, v2, master, original, inodes, len(runs) + 1))
            except FalseRollback as exc:
                false_rollbacks.append(str(exc))
                log(f"   attempt {attempts}: {exc}; run repeated")
        live = [r["t0_to_live"] for r in runs]
        summary = {
            "p50_t0_to_live": p50(live), "max_t0_to_live": max(live),
            "p50_t0_to_rollback_decision": p50([r["t0_to_rollback_decision"] for r in runs]),
            "p50_decision_to_live": p50([r["decision_to_live"] for r in runs]),
            "p50_t0_to_last_5xx_logged": p50([r["t0_to_last_5xx_logged"] for r in runs
                                              if r["t0_to_last_5xx_logged"] is not None]),
            "baseline_reload_p50": p50(baseline), "baseline_reload_max": max(baseline),
            "target_p50_s": 1.0,
        }
        summary["target_met"] = summary["p50_t0_to_live"] <= 1.0
        log(f"   T0 -> restored config live: p50 {ms(summary['p50_t0_to_live'])} ms, "
            f"max {ms(summary['max_t0_to_live'])} ms over {len(runs)} runs "
            f"(target p50 <= 1000 ms: {'met' if summary['target_met'] else 'NOT met'}); "
            f"of which detection p50 {ms(summary['p50_t0_to_rollback_decision'])} ms, "
            f"decision -> live p50 {ms(summary['p50_decision_to_live'])} ms; "
            f"last 5xx logged p50 {ms(summary['p50_t0_to_last_5xx_logged'])} ms after T0")
        summary["false_rollbacks_before_t0"] = len(false_rollbacks)
        if false_rollbacks:
            log(f"   the healthy canary was rolled back before T0 in {len(false_rollbacks)} of {attempts} attempts "
                f"(repeated; reasons above)")
        return {"settings": {"rate": args.rate, "bake": args.bake, "analysis": ROLLBACK_ANALYSIS,
                             "steps": [10, 100], "workers": args.workers, "apps": "separate processes"},
                "baseline_reload": baseline, "runs": runs, "summary": summary,
                "false_rollbacks": false_rollbacks,
                "daemon_exit": daemon.stop()}


def _one_rollback(args: argparse.Namespace, site: DemoSite, daemon: Daemon, v2: AppProcess, master: int,
                  original: bytes, inodes: Set[str], number: int) -> Dict[str, Any]:
    v2.update(error_rate=0.0)
    if site.upstream_conf.read_bytes() != original:
        raise BenchError("the upstream file does not hold its original bytes before the run")
    wait_generation_settled(master, site.workers)
    log_offset = site.access_log.stat().st_size
    stop = threading.Event()
    holder: Dict[str, Any] = {}
    cap = args.bake + READY_TIMEOUT + LIVE_TIMEOUT + 10
    loader = threading.Thread(target=lambda: holder.setdefault("r", run_load(
        site.url, rate=args.rate, duration=cap, max_requests=int(args.rate * cap) + 1, stop_event=stop)),
        daemon=True)
    run_start = time.time()
    loader.start()
    try:
        time.sleep(1.0)
        started = daemon.call("start", {"name": "app"})
        t_start = time.time()
        if started["state"] != "progressing":
            raise BenchError(f"rollout did not start: {started.get('message')}")
        deadline = time.monotonic() + args.bake + READY_TIMEOUT
        while True:
            st = daemon.status()
            verdict = (st.get("last_check") or {}).get("verdict")
            if st["state"] != "progressing":
                if st["state"] == "rolled_back":
                    raise FalseRollback(f"healthy canary rolled back before T0: {st.get('message')}")
                raise BenchError(f"rollout left progressing before T0: {st['state']}: {st.get('message')}")
            if st["canary_percent"] == 10 and verdict == "pass" and time.time() - t_start >= args.bake:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"rollout not at 10 % with a passing check after {args.bake + READY_TIMEOUT:g} s: "
                                 f"{st['canary_percent']} %, last verdict {verdict}")
            time.sleep(0.05)
        canary_in_window = (st.get("canary") or {}).get("requests")
        before = worker_pids(master)
        t0 = time.time()
        v2.update(error_rate=1.0)
        t_file, t_live, detail = wait_live(original, site.upstream_conf, master, before, inodes, t0)
        if t_live is None:
            raise BenchError(f"run {number}: restored config not live {LIVE_TIMEOUT:g} s after T0 "
                             f"(file restored: {t_file is not None}); daemon: {daemon.tail(5)}")
        end_deadline = time.monotonic() + 10
        while daemon.status()["state"] == "progressing" and time.monotonic() < end_deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # clients keep going: any 5xx after the restore would show
    finally:
        stop.set()
        loader.join(LIVE_TIMEOUT + 20)
    load = holder.get("r")
    st = daemon.status()
    history = daemon.history(run_start)
    all_fails = [r for r in history if r["event"] == "check"
                 and (r["detail"].get("verdict") or {}).get("verdict") == "fail"]
    fails = [r for r in all_fails if r["time"] >= t0]
    rollback = next((r for r in history if r["event"] == "rollback" and r["time"] >= t0), None)
    restored = next((r for r in history if r["event"] == "restored" and r["time"] >= t0), None)
    lines, _ = read_log_from(site.access_log, log_offset)
    last_5xx, logged_5xx = last_5xx_logged(lines)
    run = {
        "run": number,
        "state_after": st["state"],
        "canary_requests_in_window_at_t0": canary_in_window,
        "seconds_at_10pct_before_t0": round(t0 - t_start, 3),
        "t0_to_file_restored": t_file - t0,
        "t0_to_live": t_live - t0,
        "t0_to_first_failed_check": fails[0]["time"] - t0 if fails else None,
        "t0_to_rollback_decision": rollback["time"] - t0 if rollback else None,
        "decision_to_file_restored": t_file - rollback["time"] if rollback else None,
        "decision_to_live": t_live - rollback["time"] if rollback else None,
        "history_restored_minus_rollback": restored["time"] - rollback["time"] if rollback and restored else None,
        "failed_checks": len(fails),
        "failed_checks_before_t0": len(all_fails) - len(fails),
        "rollback_reason": (rollback or {}).get("detail", {}).get("reason"),
        "t0_to_last_5xx_logged": None if last_5xx is None else last_5xx - t0,
        "logged_5xx": logged_5xx,
        "client_5xx": load.status_5xx if load else None,
        "client_socket_errors": load.socket_errors if load else None,
        "load_rate": round(load.rate, 1) if load else None,
        "load_answers": load.responses if load else None,
        "polls": detail.get("polls"),
    }
    log(f"   run {number}: T0 -> live {ms(run['t0_to_live'])} ms (file restored {ms(run['t0_to_file_restored'])}); "
        f"first failed check {ms(run['t0_to_first_failed_check'])}, rollback decision "
        f"{ms(run['t0_to_rollback_decision'])}, decision -> live {ms(run['decision_to_live'])}; "
        f"last 5xx logged {ms(run['t0_to_last_5xx_logged'])} ms; clients got {run['client_5xx']} 5xx, "
        f"{run['client_socket_errors']} socket errors at {run['load_rate']} req/s; "
        f"canary requests in window at T0 {canary_in_window}; state {run['state_after']}")
    if st["state"] != "rolled_back":
        raise BenchError(f"run {number}: state {st['state']} after the canary broke: {st.get('message')}")
    return run


# -- 2. errors caused by stepping ---------------------------------------------------------------

def _proxy_site(stack: contextlib.ExitStack, args: argparse.Namespace, nginx_bin: str, tag: str,
                steps: Sequence[int], step_interval: str, log_format: Optional[str] = None,
                metrics_port: int = 0) -> Tuple[DemoSite, int]:
    """The proxy nginx (and its backend nginx) of stepping and overhead; ``log_format``: see use_log_format."""
    site = new_site(stack, nginx_bin, args.workers, tag)
    site.write(steps=steps, step_interval=step_interval, analysis=dict(ROLLBACK_ANALYSIS))
    if log_format is not None:
        use_log_format(site, log_format, metrics_port)
    backend = Backend(site.root, nginx_bin, site.ports)
    stack.callback(backend.stop)
    backend.start()
    master = start_nginx(stack, site)
    return site, master


def bench_stepping(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    log(f"== 2. errors caused by stepping: wrk -t{args.wrk_threads} -c{args.wrk_connections} "
        f"-d{args.wrk_duration}s, backends served by a separate nginx, rollout {FULL_STEPS} "
        f"with step_interval {args.step_interval}; baselines: no rollout, and plain SIGHUP reloads at the "
        f"rollout's step times")
    with contextlib.ExitStack() as stack:
        site, master = _proxy_site(stack, args, nginx_bin, "stepping", FULL_STEPS, args.step_interval)
        daemon = start_daemon(stack, site, python)
        out: Dict[str, Any] = {"settings": {"wrk_duration": args.wrk_duration, "wrk_threads": args.wrk_threads,
                                            "wrk_connections": args.wrk_connections, "steps": FULL_STEPS,
                                            "step_interval": args.step_interval, "workers": args.workers}}
        step_offsets: List[float] = []
        for kind in ("baseline", "rollout", "reloads"):
            wait_generation_settled(master, site.workers)
            offset = site.access_log.stat().st_size
            result: Dict[str, Any] = {}
            with contextlib.ExitStack() as run_stack:
                t_wrk = time.time()
                action: Optional[threading.Thread] = None
                halt = threading.Event()
                run_stack.callback(halt.set)
                if kind == "rollout":
                    def start_rollout() -> None:
                        if halt.wait(1.0):
                            return
                        try:
                            result["start_answer"] = daemon.call("start", {"name": "app"})["state"]
                        except Exception as exc:  # noqa: BLE001 - reported below
                            result["start_error"] = str(exc)
                    action = threading.Thread(target=start_rollout, daemon=True)
                elif kind == "reloads":
                    def reload_at_offsets() -> None:
                        done = []
                        for at in step_offsets:
                            if halt.wait(max(0.0, t_wrk + at - time.time())):
                                break
                            os.kill(master, signal.SIGHUP)
                            done.append(round(time.time() - t_wrk, 2))
                        result["reloads_at"] = done
                    action = threading.Thread(target=reload_at_offsets, daemon=True)
                if action is not None:
                    action.start()
                wrk = run_wrk(site.url, args.wrk_duration, args.wrk_threads, args.wrk_connections, run_stack)
                t_end = time.time()
                if action is not None:
                    action.join(10)
            time.sleep(0.5)
            lines, _ = read_log_from(site.access_log, offset)
            logged = log_statuses(lines)
            result.update(wrk=wrk, access_log=logged, wall=t_end - t_wrk)
            extra = ""
            if kind == "rollout":
                if "start_error" in result:
                    raise BenchError(f"rollout did not start: {result['start_error']}")
                history = daemon.history(t_wrk)
                steps = [(r["time"] - t_wrk, r["detail"].get("to_percent")) for r in history if r["event"] == "step"]
                step_offsets = [t for t, _ in steps]
                promoted = next((r["time"] - t_wrk for r in history if r["event"] == "promoted"), None)
                st = daemon.status()
                fails = [r for r in history if r["event"] == "check"
                         and (r["detail"].get("verdict") or {}).get("verdict") == "fail"]
                result.update(steps=steps, promoted_at=promoted, state_after=st["state"],
                              failed_checks=len(fails), finished_inside_wrk=promoted is not None and
                              promoted <= t_end - t_wrk,
                              fail_reasons=sorted({(r["detail"].get("verdict") or {}).get("reason", "")
                                                   for r in fails})[:3])
                extra = ("\n             steps at (s after wrk start, %): " +
                         ", ".join(f"{t:.1f}s {p}" for t, p in steps) +
                         f"; promoted at {'-' if promoted is None else f'{promoted:.1f}s'} "
                         f"(wrk ran {result['wall']:.1f}s; finished inside wrk: {result['finished_inside_wrk']}); "
                         f"state {result['state_after']}; failed checks {result['failed_checks']}"
                         + (f" {result['fail_reasons']}" if result["fail_reasons"] else ""))
            elif kind == "reloads":
                extra = f"\n             SIGHUP at (s after wrk start): {result.get('reloads_at')}"
            # 499 = the client closed the connection before the answer: wrk stopping at its deadline.
            non2xx = sum(n for s, n in logged["statuses"].items() if not s.startswith("2") and s != "499")
            result["logged_non2xx"] = non2xx
            log(f"   {kind:8s}: wrk {wrk['requests']:.0f} requests, {wrk['rps']:.0f} req/s, non-2xx/3xx "
                f"{wrk['errors_status']:.0f}, socket errors {wrk['socket_errors']:.0f} (connect "
                f"{wrk['errors_connect']:.0f}, read {wrk['errors_read']:.0f}, write {wrk['errors_write']:.0f}, "
                f"timeout {wrk['errors_timeout']:.0f}), p99 {wrk['latency_p99_us'] / 1000:.1f} ms; "
                f"access log: {len(lines)} lines, statuses {logged['statuses']} (499 = closed by wrk at its end), "
                f"upstream retries {logged['requests_retried_upstream']}" + extra)
            out[kind] = result
        r = out["rollout"]
        out["target_met"] = bool(r["finished_inside_wrk"] and r["wrk"]["errors_status"] == 0
                                 and r["wrk"]["socket_errors"] == 0 and r["logged_non2xx"] == 0)
        log(f"   target zero non-2xx and zero socket errors over a full rollout: "
            f"{'met' if out['target_met'] else 'NOT met'}")
        out["daemon_exit"] = daemon.stop()
        return out


# -- 3. overhead ------------------------------------------------------------------------------

class RssSampler(threading.Thread):
    """Samples the daemon's RSS every RSS_EVERY s, and notes every nginx worker seen meanwhile."""

    def __init__(self, pid: int, master: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.master = master
        self.samples: List[Tuple[float, int]] = []
        self.workers_seen: Set[int] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set():
            self.workers_seen |= worker_pids(self.master)
            try:
                self.samples.append((time.monotonic() - start, self.proc.memory_info().rss))
            except psutil.Error:
                return
            self.halt.wait(RSS_EVERY)


def thread_cpu(proc: psutil.Process) -> Dict[int, float]:
    """user+system seconds of each live thread of ``proc``, by thread id."""
    try:
        return {t.id: t.user_time + t.system_time for t in proc.threads()}
    except psutil.Error:
        return {}


def _vm_hwm(pid: int) -> Optional[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def bench_overhead(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    """One overhead measurement per ``--log-format``, each with its own nginx and daemon; results by format."""
    out: Dict[str, Any] = {name: _overhead_one(args, python, nginx_bin, name) for name in args.log_formats}
    log("   by log format (ratio = daemon / nginx workers CPU; target <= 0.05):")
    for name, r in out.items():
        log(f"   {name:12s} idle {r['baseline']['ratio']:.4f} ({_us(r['baseline'])} us/line), stepping "
            f"{r['rollout']['ratio']:.4f} (with children {r['rollout']['ratio_with_children']:.4f}; "
            f"{_us(r['rollout'])} us/line): {'met' if r['target_met'] else 'NOT met'}")
    return out


def _us(result: Dict[str, Any]) -> str:
    return "-" if result["daemon_us_per_line"] is None else f"{result['daemon_us_per_line']:.1f}"


def _daemon_read(metrics_port: int, site: DemoSite, lines_before: int, timeout: float = 10.0) -> Dict[str, int]:
    """The daemon's counts once it has read every line of the log written since it started (BenchError if not)."""
    expected = count_lines(site.access_log) - lines_before
    deadline = time.monotonic() + timeout
    while True:
        counts = daemon_counts(metrics_port)
        if counts["parsed"] + counts["unparsed"] >= expected:
            return counts
        if time.monotonic() > deadline:
            raise BenchError(f"the daemon read {counts['parsed'] + counts['unparsed']} of the {expected} access-log "
                             f"lines nginx wrote since it started, {timeout:g} s after the load ended")
        time.sleep(0.2)


def _overhead_one(args: argparse.Namespace, python: str, nginx_bin: str, log_format: str) -> Dict[str, Any]:
    duration = args.overhead_duration
    interval_ms = max(1000, int(duration * 1000 / 8))
    log(f"== 3. overhead [{log_format}]: wrk -t{args.wrk_threads} -c{args.wrk_connections} -d{duration}s through "
        f"nginx ({args.workers} worker(s)) writing its access log in format {log_format!r}, the daemon reading "
        f"it; rollout {FULL_STEPS} with step_interval {interval_ms}ms vs rollout idle")
    with contextlib.ExitStack() as stack:
        metrics_port = free_port()
        site, master = _proxy_site(stack, args, nginx_bin, "overhead", FULL_STEPS, f"{interval_ms}ms",
                                   log_format=log_format, metrics_port=metrics_port)
        lines_before = count_lines(site.access_log)
        daemon = start_daemon(stack, site, python)
        time.sleep(1.0)
        rss_idle = daemon.ps.memory_info().rss
        seen = _daemon_read(metrics_port, site, lines_before)
        out: Dict[str, Any] = {"log_format": log_format,
                               "settings": {"duration": duration, "step_interval_ms": interval_ms,
                                            "wrk_threads": args.wrk_threads, "wrk_connections": args.wrk_connections,
                                            "workers": args.workers, "log_format": log_format,
                                            "metrics_listen": True},
                               "daemon_rss_idle_before": rss_idle}
        for kind in ("baseline", "rollout"):
            wait_generation_settled(master, site.workers)
            offset = site.access_log.stat().st_size
            sampler = RssSampler(daemon.proc.pid, master)
            c0, w0, m0 = nginx_cpu(master)
            d0 = daemon.ps.cpu_times()
            th0 = thread_cpu(daemon.ps)
            sys0 = psutil.cpu_times()
            t0 = time.monotonic()
            sampler.start()
            with contextlib.ExitStack() as run_stack:
                run_stack.callback(sampler.halt.set)
                if kind == "rollout":
                    answer = daemon.call("start", {"name": "app"})
                    if answer["state"] != "progressing":
                        raise BenchError(f"rollout did not start: {answer.get('message')}")
                wrk = run_wrk(site.url, duration, args.wrk_threads, args.wrk_connections, run_stack)
                time.sleep(0.5)  # the daemon reads the last lines; old workers finish
                if kind == "rollout":
                    st_end = daemon.status()
                wait_generation_settled(master, site.workers)
                elapsed = time.monotonic() - t0
                c1, w1, m1 = nginx_cpu(master)
                d1 = daemon.ps.cpu_times()
                th1 = thread_cpu(daemon.ps)
                sys1 = psutil.cpu_times()
            sampler.join(2)
            # Outside the measured window: what the daemon made of the lines (a daemon that parsed
            # nothing would show a fake-low overhead).
            now_seen = _daemon_read(metrics_port, site, lines_before)
            read = {k: now_seen[k] - seen[k] for k in seen}
            seen = now_seen
            workers_cpu = (c1 - c0) + sum(w1.values()) - sum(w0.values())
            daemon_self = (d1.user + d1.system) - (d0.user + d0.system)
            daemon_children = (d1.children_user + d1.children_system) - (d0.children_user + d0.children_system)
            busy = (sum(sys1) - sys1.idle - sys1.iowait) - (sum(sys0) - sys0.idle - sys0.iowait)
            total = sum(sys1) - sum(sys0)
            lines, _ = read_log_from(site.access_log, offset)
            rss = [s for _, s in sampler.samples]
            result = {
                "log_format": log_format,
                "elapsed": elapsed,
                "wrk": wrk,
                "daemon_cpu_s": daemon_self,
                "daemon_children_cpu_s": daemon_children,
                "nginx_workers_cpu_s": workers_cpu,
                "nginx_master_cpu_s": m1 - m0,
                "ratio": daemon_self / workers_cpu if workers_cpu > 0 else None,
                "ratio_with_children": (daemon_self + daemon_children) / workers_cpu if workers_cpu > 0 else None,
                "log_lines": len(lines),
                "log_lines_per_s": len(lines) / elapsed,
                "log_bytes_per_line": (site.access_log.stat().st_size - offset) / len(lines) if lines else None,
                "daemon_lines_parsed": read["parsed"],
                "daemon_lines_unparsed": read["unparsed"],
                "daemon_attempts_canary": read["canary"],
                "daemon_attempts_stable": read["stable"],
                "daemon_us_per_line": daemon_self / len(lines) * 1e6 if lines else None,
                "machine_busy_pct": 100.0 * busy / total if total > 0 else None,
                "workers_exited_during": len((sampler.workers_seen | set(w0)) - set(w1)),
                # The main thread tails the log, analyses it, runs the checks and the steps; the others are
                # the control socket's and the log tailer's watchdog (inotify) threads.
                "daemon_main_thread_cpu_s": th1.get(daemon.proc.pid, 0.0) - th0.get(daemon.proc.pid, 0.0),
                "daemon_other_threads_cpu_s": sum(v - th0.get(k, 0.0) for k, v in th1.items()
                                                  if k != daemon.proc.pid),
                "daemon_threads": len(th1),
                "rss_start": rss[0] if rss else None,
                "rss_middle": rss[len(rss) // 2] if rss else None,
                "rss_end": rss[-1] if rss else None,
                "rss_max": max(rss) if rss else None,
                "rss_samples": len(rss),
                "daemon_vm_hwm": _vm_hwm(daemon.proc.pid),
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            }
            if kind == "rollout":
                history = daemon.history(time.time() - elapsed - 5)
                result["steps_taken"] = sum(1 for r in history if r["event"] == "step")
                result["state_at_end"] = st_end["state"]
                result["canary_percent_at_end"] = st_end["canary_percent"]
            mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"  # noqa: E731
            log(f"   {log_format} {kind:8s}: {elapsed:.1f}s, wrk {wrk['rps']:.0f} req/s, access log "
                f"{result['log_lines_per_s']:.0f} lines/s; daemon CPU {daemon_self:.2f}s (+{daemon_children:.2f}s "
                f"nginx -t children), nginx workers {workers_cpu:.2f}s (master {result['nginx_master_cpu_s']:.2f}s, "
                f"{result['workers_exited_during']} workers exited); ratio {result['ratio']:.4f} (with children "
                f"{result['ratio_with_children']:.4f}); {_us(result)} daemon us/line; machine busy "
                f"{result['machine_busy_pct']:.0f}%; load average {result['loadavg_end']}")
            log(f"             the daemon read {len(lines)} lines of {result['log_bytes_per_line'] or 0:.0f} bytes: "
                f"{read['parsed']} parsed, {read['unparsed']} unparsed; upstream attempts stable {read['stable']}, "
                f"canary {read['canary']} (its metrics)")
            log(f"             daemon CPU by thread: main (tail, analysis, checks) "
                f"{result['daemon_main_thread_cpu_s']:.2f}s, the {result['daemon_threads'] - 1} other threads "
                f"(step-change worker, watchdog observers, control socket, metrics) {result['daemon_other_threads_cpu_s']:.2f}s")
            log(f"             daemon RSS MiB: start {mib(result['rss_start'])}, middle {mib(result['rss_middle'])}, "
                f"end {mib(result['rss_end'])}, max {mib(result['rss_max'])} ({len(rss)} samples); "
                + (f"rollout: {result['steps_taken']} steps, {result['state_at_end']} at "
                   f"{result['canary_percent_at_end']} %" if kind == "rollout" else "rollout idle"))
            out[kind] = result
            _check_judged(log_format, kind, result)
        r = out["rollout"]
        growth = (r["rss_end"] - r["rss_start"]) if r["rss_start"] else None
        out["rss_growth_during_rollout"] = growth
        out["target_met"] = r["ratio"] is not None and r["ratio"] <= 0.05 and out["baseline"]["ratio"] <= 0.05
        log(f"   [{log_format}] target daemon / nginx workers CPU <= 0.05: {'met' if out['target_met'] else 'NOT met'} "
            f"(idle {out['baseline']['ratio']:.4f}, stepping {r['ratio']:.4f}); RSS {rss_idle / 2**20:.1f} MiB idle "
            f"before, {(growth or 0) / 2**20:+.1f} MiB start -> end of the rollout run")
        out["daemon_exit"] = daemon.stop()
        return out


def _check_judged(log_format: str, kind: str, result: Dict[str, Any]) -> None:
    """Raise BenchError unless the daemon parsed the run's lines (and, stepping, judged the canary from them)."""
    lines = result["log_lines"]
    parsed, unparsed = result["daemon_lines_parsed"], result["daemon_lines_unparsed"]
    attempts = result["daemon_attempts_canary"] + result["daemon_attempts_stable"]
    problems = []
    if lines == 0:
        problems.append("nginx logged no line")
    if parsed < 0.99 * lines or unparsed > 0.01 * lines:
        problems.append(f"the daemon parsed {parsed} and failed to parse {unparsed} of the {lines} lines")
    if attempts < 0.99 * lines:
        problems.append(f"the daemon counted {attempts} upstream attempts for {lines} lines")
    if kind == "rollout" and (result["daemon_attempts_canary"] == 0 or result["steps_taken"] < 2):
        problems.append(f"the rollout judged nothing: {result['daemon_attempts_canary']} canary attempts, "
                        f"{result['steps_taken']} steps")
    if problems:
        raise BenchError(f"overhead [{log_format}] {kind}: the figures are meaningless: " + "; ".join(problems))


# -- 4. a canary broken from the start ---------------------------------------------------------

def bench_broken_start(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    log(f"== 4. broken from the start: {args.runs} runs, load {ISSUE_RATE:g} req/s (run_load), canary 10 % "
        f"answering 500 to every request, analysis at its defaults but {BROKEN_START_ANALYSIS}; T0 = "
        f"`nginx-canary start` (a separate CLI process) returned")
    with contextlib.ExitStack() as stack:
        site = new_site(stack, nginx_bin, args.workers, "broken-start")
        write_site(site, [10, 100], "3600s", BROKEN_START_ANALYSIS)
        v1 = AppProcess(python, "v1", site.ports["v1"], site.root)
        stack.callback(v1.stop)
        v2 = AppProcess(python, "v2", site.ports["v2"], site.root)
        stack.callback(v2.stop)
        v2.update(error_rate=1.0)
        master = start_nginx(stack, site)
        original = site.upstream_conf.read_bytes()
        inodes = listen_inodes(site.ports["front"])
        if not inodes:
            raise BenchError("cannot find nginx's listening socket in /proc/net/tcp")
        daemon = start_daemon(stack, site, python)
        runs = [_one_broken_start(site, daemon, python, master, original, inodes, n) for n in range(1, args.runs + 1)]
        live = [r["t0_to_live"] for r in runs]

        def p50_of(key: str) -> Optional[float]:
            return p50([r[key] for r in runs if r[key] is not None])

        summary = {
            "p50_t0_to_live": p50(live), "max_t0_to_live": max(live),
            "p50_t0_to_restored_record": p50_of("t0_to_restored_record"),
            "p50_t0_to_rollback_decision": p50_of("t0_to_rollback_decision"),
            "p50_step_applied_to_live": p50_of("step_applied_to_live"),
            "p50_cli_call": p50_of("cli_call"),
            "target_p50_s": 1.0,
        }
        summary["target_met"] = summary["p50_t0_to_live"] <= 1.0
        log(f"   start returned -> restored config live: p50 {ms(summary['p50_t0_to_live'])} ms, max "
            f"{ms(summary['max_t0_to_live'])} ms over {len(runs)} runs (target p50 <= 1000 ms: "
            f"{'met' if summary['target_met'] else 'NOT met'}); 'restored' record p50 "
            f"{ms(summary['p50_t0_to_restored_record'])} ms, rollback decision p50 "
            f"{ms(summary['p50_t0_to_rollback_decision'])} ms; from the 10 % step applied (history) to live p50 "
            f"{ms(summary['p50_step_applied_to_live'])} ms; the CLI call itself took p50 "
            f"{ms(summary['p50_cli_call'])} ms")
        return {"settings": {"rate": ISSUE_RATE, "analysis": BROKEN_START_ANALYSIS, "steps": [10, 100],
                             "workers": args.workers, "end": "restored config live (file, new workers, old gone)"},
                "runs": runs, "summary": summary, "daemon_exit": daemon.stop()}


def _one_broken_start(site: DemoSite, daemon: Daemon, python: str, master: int, original: bytes,
                      inodes: Set[str], number: int) -> Dict[str, Any]:
    """One run; times relative to T0 are negative when nginx-canary's process exited after the restore."""
    if site.upstream_conf.read_bytes() != original:
        raise BenchError("the upstream file does not hold its original bytes before the run")
    wait_generation_settled(master, site.workers)
    log_offset = site.access_log.stat().st_size
    load = BackgroundLoad(site.url, ISSUE_RATE, 1.0 + 30.0 + LIVE_TIMEOUT + 15.0)
    run_start = time.time()
    try:
        time.sleep(1.0)
        t_call = time.time()
        seen = watch_restore(cli_start(site, python), original, site.upstream_conf, master, inodes)
        t0 = seen["returned"]
        end_deadline = time.monotonic() + 10
        while daemon.status()["state"] == "progressing" and time.monotonic() < end_deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # clients keep going: any 5xx after the restore would show
    finally:
        result = load.stop()
    st = daemon.status()
    history = daemon.history(run_start)

    def at(event: str) -> Optional[float]:
        return next((r["time"] for r in history if r["event"] == event), None)

    def rel(t: Optional[float], base: float) -> Optional[float]:
        return None if t is None else t - base

    rollback = next((r for r in history if r["event"] == "rollback"), None)
    last_5xx, logged_5xx = last_5xx_logged(read_log_from(site.access_log, log_offset)[0])
    run = {
        "run": number,
        "state_after": st["state"],
        "cli_call": t0 - t_call,
        "t0_to_file_changed": seen["changed"] - t0,
        "t0_to_file_restored": seen["file"] - t0,
        "t0_to_live": seen["live"] - t0,
        "t0_to_step_applied": rel(at("step"), t0),
        "step_applied_to_live": rel(seen["live"], at("step") or 0.0) if at("step") else None,
        "t0_to_rollback_decision": rel(at("rollback"), t0),
        "t0_to_restored_record": rel(at("restored"), t0),
        "rollback_reason": (rollback or {}).get("detail", {}).get("reason"),
        "t0_to_last_5xx_logged": rel(last_5xx, t0),
        "logged_5xx": logged_5xx,
        "client_5xx": result.status_5xx if result else None,
        "load_rate": round(result.rate, 1) if result else None,
    }
    log(f"   run {number}: start returned -> live {ms(run['t0_to_live'])} ms (file restored "
        f"{ms(run['t0_to_file_restored'])}, 'restored' record {ms(run['t0_to_restored_record'])}, decision "
        f"{ms(run['t0_to_rollback_decision'])}); step applied {ms(run['t0_to_step_applied'])} ms, last 5xx logged "
        f"{ms(run['t0_to_last_5xx_logged'])} ms; {logged_5xx} 5xx logged at {run['load_rate']} req/s; "
        f"state {run['state_after']}: {run['rollback_reason']}")
    if st["state"] != "rolled_back":
        raise BenchError(f"run {number}: state {st['state']} after a canary broken from the start: {st.get('message')}")
    return run


def compare_broken(results: Dict[str, Any]) -> None:
    """One line: the canary broken from the start beside the one that breaks after a healthy window."""
    broken, rollback = results.get("broken-start"), results.get("rollback")
    if not broken or not rollback:
        return
    b, r = broken["summary"], rollback["summary"]
    log(f"== broken from the start vs breaking after a healthy window (this invocation): restored config live "
        f"p50 {ms(b['p50_t0_to_live'])} ms / max {ms(b['max_t0_to_live'])} ms after start returned (analysis "
        f"defaults, interval 250ms) vs p50 {ms(r['p50_t0_to_live'])} ms / max {ms(r['max_t0_to_live'])} ms after "
        f"the canary broke ({ROLLBACK_ANALYSIS})")


# -- 5. a canary as healthy as stable ------------------------------------------------------------

def bench_healthy(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    log(f"== 5. healthy canary: {args.healthy_runs} rollouts {HEALTHY_STEPS}, step_interval "
        f"{HEALTHY_STEP_INTERVAL:g}s, analysis at its defaults ({HEALTHY_ANALYSIS}), both apps answering "
        f"{HEALTHY_ERROR_RATE:.0%} with 500, load {ISSUE_RATE:g} req/s; a run still undecided after "
        f"{args.healthy_cap:g} s is aborted")
    with contextlib.ExitStack() as stack:
        site = new_site(stack, nginx_bin, args.workers, "healthy")
        write_site(site, HEALTHY_STEPS, f"{HEALTHY_STEP_INTERVAL:g}s", HEALTHY_ANALYSIS, on_success="restore")
        apps = []
        for version in ("v1", "v2"):
            app = AppProcess(python, version, site.ports[version], site.root)
            stack.callback(app.stop)
            app.update(error_rate=HEALTHY_ERROR_RATE)
            apps.append(app)
        master = start_nginx(stack, site)
        original = site.upstream_conf.read_bytes()
        daemon = start_daemon(stack, site, python)
        runs = [_one_healthy(args, site, daemon, master, original, n) for n in range(1, args.healthy_runs + 1)]
        promoted = [r for r in runs if r["outcome"] == "promoted"]
        times = [r["start_to_promoted"] for r in promoted]
        waits: Dict[str, List[float]] = {}
        for r in promoted:
            for step in r["steps"]:
                waits.setdefault(str(step["percent"]), []).append(step["beyond_bake"])
        summary = {
            "runs": len(runs),
            "rolled_back": sum(r["outcome"] == "rolled_back" for r in runs),
            "promoted": len(promoted),
            "undecided": sum(r["outcome"] == "undecided" for r in runs),
            "other": sum(r["outcome"] not in ("promoted", "rolled_back", "undecided") for r in runs),
            "p50_start_to_promoted": p50(times), "max_start_to_promoted": max(times) if times else None,
            "wait_beyond_bake_by_step": {k: {"p50": p50(v), "max": max(v)} for k, v in waits.items()},
            "rollback_reasons": [r["reason"] for r in runs if r["outcome"] == "rolled_back"],
            "target": "0 rollbacks in 20 rollouts",
        }
        log(f"   {summary['rolled_back']} rolled back, {summary['promoted']} promoted, {summary['undecided']} undecided "
            f"(cap {args.healthy_cap:g} s), {summary['other']} other, of {len(runs)} (target: 0 rollbacks in 20); "
            f"start -> promoted p50 {_s(summary['p50_start_to_promoted'])}, max {_s(summary['max_start_to_promoted'])}")
        log("   waiting for evidence beyond the step's bake, promoted runs (p50 / max): " + ", ".join(
            f"{k} %: {_s(v['p50'])} / {_s(v['max'])}" for k, v in summary["wait_beyond_bake_by_step"].items()))
        return {"settings": {"rate": ISSUE_RATE, "analysis": HEALTHY_ANALYSIS, "steps": HEALTHY_STEPS,
                             "step_interval": HEALTHY_STEP_INTERVAL, "error_rate": HEALTHY_ERROR_RATE,
                             "cap": args.healthy_cap, "workers": args.workers},
                "runs": runs, "summary": summary, "daemon_exit": daemon.stop()}


def _s(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _one_healthy(args: argparse.Namespace, site: DemoSite, daemon: Daemon, master: int, original: bytes,
                 number: int) -> Dict[str, Any]:
    if site.upstream_conf.read_bytes() != original:
        raise BenchError("the upstream file does not hold its original bytes before the run")
    wait_generation_settled(master, site.workers)
    load = BackgroundLoad(site.url, ISSUE_RATE, 1.0 + args.healthy_cap + LIVE_TIMEOUT + 15.0)
    run_start = time.time()
    outcome = None
    try:
        time.sleep(1.0)
        answer = daemon.call("start", {"name": "app"})
        t_start = time.time()
        if answer["state"] != "progressing":
            raise BenchError(f"rollout did not start: {answer.get('message')}")
        deadline = time.monotonic() + args.healthy_cap
        while True:
            st = daemon.status()
            if st["state"] in END_STATES:
                outcome = st["state"]
                break
            if time.monotonic() > deadline:
                outcome = "undecided"
                daemon.call("abort", {"name": "app"})
                break
            time.sleep(0.25)
        t_end = time.time()
        settle = time.monotonic() + LIVE_TIMEOUT
        while (daemon.status()["state"] not in END_STATES or site.upstream_conf.read_bytes() != original) \
                and time.monotonic() < settle:
            time.sleep(0.1)
    finally:
        result = load.stop()
    st = daemon.status()
    history = daemon.history(run_start)
    steps = [(r["time"], r["detail"].get("to_percent")) for r in history if r["event"] == "step"]
    promoted_at = next((r["time"] for r in history if r["event"] == "promoted"), None)
    rollback = next((r for r in history if r["event"] == "rollback"), None)
    inconclusive: Dict[Any, str] = {}
    for r in history:
        v = r["detail"].get("verdict") if r["event"] == "check" else None
        if isinstance(v, dict) and v.get("verdict") == "inconclusive":
            pct = next((p for t, p in reversed(steps) if t <= r["time"]), None)
            inconclusive[pct] = v.get("reason", "")
    per_step = []
    for i, (t, pct) in enumerate(steps):
        left = steps[i + 1][0] if i + 1 < len(steps) else (promoted_at or t_end)
        per_step.append({"percent": pct, "seconds": round(left - t, 2),
                         "beyond_bake": round(left - t - HEALTHY_STEP_INTERVAL, 2),
                         "last_inconclusive": inconclusive.get(pct)})
    run = {
        "run": number, "outcome": outcome, "state_after": st["state"],
        "start_to_promoted": None if promoted_at is None else promoted_at - t_start,
        "start_to_end": t_end - t_start,
        "reason": (rollback or {}).get("detail", {}).get("reason"),
        "steps": per_step,
        "client_5xx_by_version": dict(result.versions_5xx) if result else None,
        "client_by_version": dict(result.versions) if result else None,
        "load_rate": round(result.rate, 1) if result else None,
    }
    log(f"   run {number}: {outcome} after {run['start_to_end']:.1f} s; time at each step (beyond the "
        f"{HEALTHY_STEP_INTERVAL:g} s bake): " + ", ".join(f"{s['percent']} % {s['seconds']:.1f} s "
                                                          f"({s['beyond_bake']:+.1f})" for s in per_step)
        + f"; load {run['load_rate']} req/s, 5xx by version {run['client_5xx_by_version']}"
        + (f"; reason: {run['reason']}" if run["reason"] else ""))
    for s in per_step:
        if s["beyond_bake"] > 1.0 and s["last_inconclusive"]:
            log(f"             at {s['percent']} %, last inconclusive check in the history: {s['last_inconclusive']}")
    return run


# -- main ---------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    global OUT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="rollback runs (default: %(default)s; at least 5 for p50/max)")
    p.add_argument("--rate", type=float, default=220.0, help="rollback load, req/s (default: %(default)s)")
    p.add_argument("--bake", type=float, default=12.0,
                   help="seconds at 10 %% before T0 (default: %(default)s: the 10 s window is full)")
    p.add_argument("--workers", type=int, default=1, help="proxy nginx worker_processes (default: %(default)s)")
    p.add_argument("--wrk-duration", type=int, default=20, help="stepping: wrk seconds (default: %(default)s)")
    p.add_argument("--step-interval", default="1s", help="stepping: step_interval (default: %(default)s)")
    p.add_argument("--overhead-duration", type=int, default=20, help="overhead: wrk seconds (default: %(default)s)")
    p.add_argument("--log-format", action="append", metavar="NAME[,NAME...]",
                   help="overhead: the access-log format(s) the proxy nginx writes and the daemon reads, one "
                   "measurement each: canary or the stem of a tests/data/real-world/log-formats/*.conf file "
                   "(repeatable; default: canary)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--wrk-connections", type=int, default=8)
    p.add_argument("--healthy-runs", type=int, default=20, help="healthy: rollouts (default: %(default)s)")
    p.add_argument("--healthy-cap", type=float, default=360.0,
                   help="healthy: seconds a rollout may take before it is aborted as undecided (default: %(default)s)")
    p.add_argument("--only", default="rollback,stepping,overhead",
                   help="comma-separated subset of " + ",".join(BENCHES) + " (broken-start runs rollback too, "
                   "to print both figures side by side; default: %(default)s)")
    p.add_argument("--json", metavar="FILE",
                   help="also write every figure as JSON to FILE ('-': stdout, the text goes to stderr)")
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.runs < 1 or args.runs > 100:
        p.error("--runs must be from 1 to 100")
    if not 1 <= args.healthy_runs <= 100 or not 60 <= args.healthy_cap <= 1800:
        p.error("--healthy-runs must be from 1 to 100, --healthy-cap from 60 to 1800 s")
    if "broken-start" in only and "rollback" not in only:
        only.append("rollback")
    if not 0 <= args.bake <= 120 or not 1 <= args.workers <= 8:
        p.error("--bake must be from 0 to 120 s, --workers from 1 to 8")
    if not 200 <= args.rate <= 2000:
        p.error("--rate must be from 200 to 2000 req/s")
    if not 1 <= args.wrk_duration <= 300 or not 1 <= args.overhead_duration <= 300:
        p.error("wrk durations must be from 1 to 300 s")
    if not 1 <= args.wrk_connections <= 64 or not 1 <= args.wrk_threads <= 8:
        p.error("--wrk-connections 1..64, --wrk-threads 1..8")
    try:
        args.log_formats = log_format_names(args.log_format or ["canary"])
    except ValueError as exc:
        p.error(str(exc))
    if args.json == "-":
        OUT = sys.stderr
    nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx_bin is None:
        p.error("nginx not found (PATH=/usr/sbin:$PATH, or `make nginx`)")
    if ({"stepping", "overhead"} & set(only)) and not shutil.which("wrk"):
        p.error("wrk not found (`make wrk`, or apt-get install wrk)")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    python = sys.executable
    machine = describe_machine(python, tempfile.gettempdir(), nginx_bin)
    log(f"machine: {machine['cpu']}, {machine['cores_logical']} logical cores ({machine['cores_physical']} physical), "
        f"{machine['memory_gib']} GiB; load average {machine['loadavg_start']}; kernel {machine['kernel']}")
    log(f"software: Python {machine['python']} ({python}), {machine['nginx']}, {machine['wrk']}; "
        f"nginx_canary from {machine['nginx_canary']}, C log accelerator "
        f"{ {True: 'built', False: 'not built', None: 'absent from this version'}[machine['c_accelerator']] }"
        + (f", NGINX_CANARY_PURE_PYTHON={machine['pure_python_env']}" if machine["pure_python_env"] else ""))
    results: Dict[str, Any] = {"machine": machine, "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    benches: Dict[str, Callable[[argparse.Namespace, str, str], Dict[str, Any]]] = {
        "rollback": bench_rollback, "stepping": bench_stepping, "overhead": bench_overhead,
        "broken-start": bench_broken_start, "healthy": bench_healthy}
    status = 0
    try:
        for name in BENCHES:
            if name in only:
                results[name] = benches[name](args, python, nginx_bin)
                log()
        compare_broken(results)
    except BenchError as exc:
        log(f"bench_rollout: error: {exc}")
        results["error"] = str(exc)
        status = 1
    except KeyboardInterrupt:
        log("bench_rollout: interrupted; everything started here has been stopped")
        return 130
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    log(f"load average at the end: {machine['loadavg_end']}")
    if args.json:
        text = json.dumps(results, indent=2, sort_keys=True, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
