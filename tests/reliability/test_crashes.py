"""SIGKILL the daemon at random moments of real rollouts, restart it after each kill, check every invariant.

One long-lived site (nginx, v1/v2 demo apps, 150 req/s of load) serves every
trial; rollouts follow each other: steps 10, 50, 100 with a 250 ms bake time,
``on_success: restore`` (so every run, promoted, rolled back or aborted, ends
on the original files), some runs aborted by the operator or failed by a
canary that starts answering 500, at random moments.

Each trial starts the daemon with one way to die:

* ``delay``: SIGKILL after a random delay (0.1 to 3 s);
* ``after_write`` / ``after_test`` / ``after_reload`` ``=kill@N``: the fault
  point kills the daemon at the N-th transaction (N random, 1 to 4), i.e. between
  writing the files and ``nginx -t``, between ``nginx -t`` and the reload
  signal, and after the reload before the journal is cleared; the N-th
  transaction of a run may be a step change or the restore at its end;
* ``during_restore=kill@1``: at a random moment a broken file is added to
  ``conf.d`` (``nginx -t`` fails), so the next transaction fails and puts its
  two files back; the daemon dies between the two. The operator removes the
  broken file before the restart.

A daemon restarted after a kill carries the next trial's fault, so a kill can
also land in the recovery of the previous one (counted as ``in recovery``).

Invariants, right after each kill and again right after each restart's
recovery (the daemon frozen with SIGSTOP while they are read):

* every managed file is byte-identical to the snapshot or to a valid step
  (mixed across the two files only while the transaction journal exists);
* the saved state agrees with the files: its ``expected_files`` are the files'
  hashes, or it holds a recognisable intent (a step change in flight whose
  ``expected_files`` are the target step's, or a restore still owed whose
  files are either the ones it started from or the snapshot's), and a journal
  on disk always comes with such an intent;
* after recovery, ``nginx -t`` passes and no state is ``failed``;
* every run ends ``promoted``, ``rolled_back`` or ``aborted`` with its files
  restored, and nginx never failed a client (no socket error in the load).

``NGINX_CANARY_CRASH_TRIALS`` sets the number of kills (30 in CI);
``NGINX_CANARY_CRASH_SEED`` replays a sequence.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from typing import Any, Dict, List, Optional

import pytest

from tests.reliability.conftest import (
    TERMINAL,
    Steps,
    check_state_and_files,
    disk_hashes,
    history,
    kill_daemon,
    launch,
    temp_files,
    try_call,
    wait_ready,
)

TRIALS = int(os.environ.get("NGINX_CANARY_CRASH_TRIALS", "30"))
STEPS = (10, 50, 100)
POINTS = ("after_write", "after_test", "after_reload")
MODES = ("delay",) * 3 + POINTS * 2 + ("during_restore",)
BROKEN = "conf.d/zz-broken.conf"
#: A fault that did not fire by then (its N-th transaction never came) is replaced by a plain SIGKILL.
FAULT_PATIENCE = 12.0


class CrashRun:
    def __init__(self, h: Any, steps: Steps, rng: random.Random, seed: int) -> None:
        self.h = h
        self.steps = steps
        self.rng = rng
        self.seed = seed
        self.kind = "healthy"
        self.action_at: Optional[float] = None
        self.action_done = False
        self.broken_at: Optional[float] = None
        self.trials: List[Dict[str, Any]] = []
        self.starts = 0

    # -- invariants --------------------------------------------------------------

    def check_state_and_files(self, when: str) -> Dict[str, Any]:
        return check_state_and_files(self.h, self.steps, f"{when} (seed {self.seed})")

    def check_recovered(self, when: str) -> Dict[str, Any]:
        """Right after the daemon answered: freeze it, check, let it go on."""
        proc = self.h.daemon
        proc.send_signal(signal.SIGSTOP)
        try:
            seen = self.check_state_and_files(when)
            result = self.h.site.nginx_t()
            assert result.returncode == 0, f"{when}: nginx -t fails after recovery: {result.stderr}"
        finally:
            proc.send_signal(signal.SIGCONT)
        return seen

    # -- driving the rollouts ------------------------------------------------------

    def drive(self, mode: str, kill_at: float) -> str:
        """Keep rollouts going until the daemon dies (fault) or ``kill_at`` (SIGKILL); returns how it died."""
        h = self.h
        broken = h.site.prefix / BROKEN
        while True:
            if h.daemon.poll() is not None:
                return "fault"
            now = time.monotonic()
            if now >= kill_at:
                kill_daemon(h)
                return "sigkill"
            status, _ = try_call(h, "status", name="app")
            if status is not None:
                st = status["rollouts"][0]
                if st["state"] in ("idle",) + TERMINAL and st["snapshot_id"] is None:
                    self.new_run(now)
                elif st["state"] in ("paused", "failed"):
                    pytest.fail(f"unexpected {st['state']}: {st['message']} (seed {self.seed})\n{h.daemon_log()}")
                elif self.action_at is not None and now >= self.action_at and not self.action_done:
                    self.action_done = True
                    if self.kind == "fail":
                        h.v2.update(error_rate=1.0)
                    elif self.kind == "abort":
                        try_call(h, "abort", name="app")
            if mode == "during_restore" and self.broken_at is not None and now >= self.broken_at \
                    and not broken.exists():
                broken.write_text("server { listen 127.0.0.1:1; client_max_body_size not-a-size; }\n")
            time.sleep(0.02)

    def new_run(self, now: float) -> None:
        h = self.h
        h.v2.update(error_rate=0.0)
        self.kind = self.rng.choice(["healthy", "healthy", "fail", "abort"])
        self.action_at = now + self.rng.uniform(0.5, 4.0) if self.kind != "healthy" else None
        self.action_done = False
        self.starts += 1
        try_call(h, "start", name="app")

    def trial(self, n: int) -> None:
        h, rng = self.h, self.rng
        mode = rng.choice(MODES)
        fault = None
        if mode in POINTS:
            fault = f"{mode}=kill@{rng.randint(1, 4)}"
        elif mode == "during_restore":
            fault = "during_restore=kill@1"
        launch(h, fault)
        record: Dict[str, Any] = {"n": n, "mode": mode, "fault": fault}
        if wait_ready(h):
            if n:
                record["after_restart"] = self.check_recovered(f"trial {n}: after the restart")
            self.broken_at = time.monotonic() + rng.uniform(0.3, 3.0) if mode == "during_restore" else None
            patience = rng.uniform(0.1, 3.0) if mode == "delay" else FAULT_PATIENCE
            record["died"] = self.drive(mode, time.monotonic() + patience)
        else:
            record["died"] = "in recovery"
        code = h.daemon.wait(10)
        assert code == -signal.SIGKILL, f"trial {n}: daemon exit {code}\n{h.daemon_log()}"
        record["at_kill"] = self.check_state_and_files(f"trial {n}: right after the kill ({mode}, {record['died']})")
        record["temps_at_kill"] = len(temp_files(h.site))
        broken = h.site.prefix / BROKEN
        if broken.exists():
            broken.unlink()  # the operator fixes the config before restarting the daemon
        self.trials.append(record)

    def finish(self) -> Dict[str, Any]:
        """A last clean start: its recovery is checked and the run under way goes to its end."""
        h = self.h
        launch(h, None)
        assert wait_ready(h)
        self.check_recovered("final restart")
        deadline = time.monotonic() + 60
        while True:
            st = h.status()
            if st["state"] in TERMINAL and st["snapshot_id"] is None:
                return st
            assert st["state"] not in ("paused", "failed"), st["message"]
            assert time.monotonic() < deadline, f"the last run did not end: {st}"
            time.sleep(0.05)


def runs_of(records: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    runs: List[List[Dict[str, Any]]] = []
    for record in records:
        if record["event"] == "start":
            runs.append([])
        if runs:
            runs[-1].append(record)
    return runs


def test_sigkill_at_random_moments_of_real_rollouts(rel_harness, capsys):
    seed = int(os.environ.get("NGINX_CANARY_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    h = rel_harness(steps=STEPS, step_interval="250ms", on_success="restore", daemon=False)
    steps = Steps(h.site, STEPS)
    load = h.load(rate=150, duration=60 + 20 * TRIALS, max_requests=10**7, concurrency=4)
    crash = CrashRun(h, steps, rng, seed)
    for n in range(TRIALS):
        crash.trial(n)
    final = crash.finish()
    seen = load.finish()

    # Every run ended, with its files restored (on_success: restore, rollback and abort alike), and nothing failed.
    records = history(h.site)
    runs = runs_of(records)
    assert runs, "no rollout ran"
    outcomes = collections.Counter()
    for run in runs:
        events = [r["event"] for r in run]
        assert "restore_failed" not in events, events
        ends = [e for e in events if e in ("promoted", "rollback", "abort")]
        assert ends, f"a run that never ended (seed {seed}): {events}"
        assert "restored" in events[events.index(ends[0]):], f"a run whose snapshot was not restored: {events}"
        outcomes[ends[0]] += 1
    assert final["state"] in TERMINAL
    assert steps.whole() == "snapshot"
    assert disk_hashes(list(steps.hashes("snapshot"))) == steps.hashes("snapshot")
    assert h.site.nginx_t().returncode == 0
    # nginx served every request while the daemon was killed again and again.
    assert seen.socket_errors == 0, seen.summary()
    assert seen.status_5xx == seen.versions_5xx.get("v2", 0), seen.summary()

    deaths = collections.Counter(t["died"] for t in crash.trials)
    by_mode = collections.Counter(f"{t['mode']}:{t['died']}" for t in crash.trials)
    in_flight = collections.Counter(
        (t["at_kill"]["intent"] or "none") + ("+journal:" + t["at_kill"]["journal"] if t["at_kill"]["journal"] else "")
        for t in crash.trials)
    mixed = sum(1 for t in crash.trials if t["at_kill"]["per_file"] and
                len({tuple(v) for v in t["at_kill"]["per_file"].values()}) > 1)
    recovered = collections.Counter(r["detail"].get("outcome") for r in records if r["event"] == "recovered")
    # Temporary files of writes a kill cut short are removed by the next start (checked once nothing writes).
    assert h.signal_daemon(signal.SIGTERM) == 0
    killed_writes = sum(t["temps_at_kill"] for t in crash.trials)
    assert temp_files(h.site) == []
    with capsys.disabled():
        print(f"\ncrash trials: {len(crash.trials)} kills (seed {seed}), {len(runs)} runs, outcomes {dict(outcomes)}")
        print(f"  how the daemon died: {dict(deaths)}")
        print(f"  by mode: {dict(sorted(by_mode.items()))}")
        print(f"  in flight at the kill: {dict(in_flight)}; files mixed across the two files: {mixed}")
        print(f"  recovery outcomes (history): {dict(recovered)}")
        print(f"  load: {seen.responses} answers, {seen.socket_errors} socket errors, 5xx {seen.status_5xx} "
              f"(all from the failing canary); temporary files left by killed writes: {killed_writes} "
              "(each removed by the next start)")
    assert len(crash.trials) == TRIALS
