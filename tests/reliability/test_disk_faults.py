"""A full or failing disk, and a read-only config directory, under real rollouts.

Disk faults come from the fault points of the write path
(``NGINX_CANARY_FAULTS``, inherited by the daemon subprocess): ENOSPC or EIO
half-way through writing an nginx config file (``write_config``), a state file
(``write_state``: the rollout state, the transaction journal, snapshot
manifests, the report's series), a snapshot copy (``write_snapshot``) or in a
history append (``history_append``), at the N-th write (N random). Each trial
then stops the daemon with SIGTERM and starts it again, and checks:

* the outcome is one of the defined ones: a failed step change pauses the
  rollout with the disk error as its reason (the first step of a start ends the
  run ``rolled_back``), a restore that cannot write ends ``failed`` loudly and
  ``abort`` retries it, and bookkeeping failures (state, history) are logged
  while the rollout goes on;
* never a half-written file: every managed file is a whole step's (or the
  snapshot's), no temporary file is left, every state and history file is
  complete JSON;
* after the restart the state agrees with the files (or holds a
  recognisable intent, see ``check_state_and_files``), and the runs end.

The read-only directory is a real read-only bind mount of ``conf.d`` in the
daemon's own mount namespace (``unshare -m``; ``nsenter`` switches it between
rw and ro while the daemon runs), so root cannot write there either, while nginx
and the test still see it writable.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import time
from typing import Any, Dict, List, Optional

from tests.reliability.conftest import (
    TERMINAL,
    Steps,
    check_state_and_files,
    disk_hashes,
    history,
    launch,
    saved_state,
    temp_files,
    try_call,
    wait_ready,
)

STEPS = (10, 50, 100)
DISK_TRIALS = max(8, int(os.environ.get("NGINX_CANARY_DISK_TRIALS", "8")))
#: Fault point -> how many writes of that kind a run makes, roughly (N is drawn up to it).
POINTS = {"write_config": 6, "write_state": 12, "write_snapshot": 6, "history_append": 8}
STRERROR = {"enospc": "No space left on device", "eio": "Input/output error"}


def assert_whole_json_files(h) -> None:
    """Every file the daemon keeps is complete: state and manifests parse, history lines parse (the last too)."""
    root = h.site.state_dir
    for path in list(root.rglob("*.json")):
        json.loads(path.read_bytes())
    for path in root.rglob("*.jsonl"):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), path
        for line in data.splitlines():
            json.loads(line)


def test_disk_faults_in_the_write_path(rel_harness, capsys):
    seed = int(os.environ.get("NGINX_CANARY_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    h = rel_harness(steps=STEPS, step_interval="250ms", daemon=False)
    steps = Steps(h.site, STEPS)
    load = h.load(rate=150, duration=60 + 15 * DISK_TRIALS, max_requests=10**7)
    trials: List[Dict[str, Any]] = []
    # Every point with each error once (N random), then random ones.
    plan = [(p, k) for p in sorted(POINTS) for k in sorted(STRERROR)]
    plan += [(rng.choice(sorted(POINTS)), rng.choice(sorted(STRERROR))) for _ in range(DISK_TRIALS - len(plan))]
    faults = [f"{point}={kind}@{rng.randint(1, POINTS[point])}" for point, kind in plan]
    if os.environ.get("NGINX_CANARY_DISK_FAULTS"):  # replay: "write_state=enospc@1;write_config=eio@3"
        faults = os.environ["NGINX_CANARY_DISK_FAULTS"].split(";")
    # A trial can end `failed` (its restore failed near the trial's end, no time to abort): the next trial
    # starts on that state, whose message names the previous fault; it is aborted there like any other.
    carried: Optional[str] = None
    for n, fault in enumerate(faults):
        rest = fault.partition("=")[2]
        kind = rest.partition("@")[0]
        where = f"trial {n} ({fault}, seed {seed})"
        seen = set()
        launch(h, fault)
        if not wait_ready(h):
            # Recovery could not save the state: the daemon refuses to run, with one line saying why.
            code = h.daemon.wait(10)
            log = h.daemon_log(h.daemon_runs)
            errors = [line for line in log.splitlines() if line.startswith("nginx-canary: error: ")]
            assert code == 1 and len(errors) == 1 and STRERROR[kind] in errors[0], f"{where}: exit {code}\n{log}"
            assert temp_files(h.site) == []
            check_state_and_files(h, steps, f"{where}: refused to start")
            trials.append({"fault": fault, "fired": True, "outcomes": ["the daemon refused to start"],
                           "state": saved_state(h.site)["state"], "intent": None})
            continue
        deadline = time.monotonic() + rng.uniform(1.5, 3.5)
        while time.monotonic() < deadline:
            status, _ = try_call(h, "status", name="app")
            assert status is not None, f"{where}: the daemon stopped answering\n{h.daemon_log()}"
            st = status["rollouts"][0]
            if st["state"] in ("idle",) + TERMINAL and st["snapshot_id"] is None:
                _, error = try_call(h, "start", name="app")
                if error is not None:
                    # The snapshot could not be taken (nothing changed: the state is the last run's), or the
                    # first step could not be written (the run ended rolled back, nothing of it applied).
                    assert STRERROR[kind] in str(error), f"{where}: {error}"
                    after = h.status()
                    assert after["state"] in ("rolled_back", st["state"]), f"{where}: {after['message']}"
                    assert steps.whole() == "snapshot"
                    seen.add("start refused, " + ("rolled back" if after["started_at"] != st["started_at"]
                                                  else "nothing changed"))
            elif st["state"] == "paused":
                assert STRERROR[kind] in st["paused_reason"], f"{where}: {st['paused_reason']}"
                assert steps.whole() == str(st["canary_percent"])
                seen.add("paused")
                try_call(h, "resume", name="app")
            elif st["state"] == "failed":
                if st["message"] != carried:
                    assert STRERROR[kind] in st["message"] and "abort" in st["message"], f"{where}: {st['message']}"
                seen.add("failed, abort retried")
                try_call(h, "abort", name="app")
            time.sleep(0.05)
        assert h.signal_daemon(signal.SIGTERM) == 0
        log = h.daemon_log(h.daemon_runs)
        fired = STRERROR[kind] in log or bool(seen)  # (a refused command is answered, not logged)
        if fired and not seen:
            seen.add("logged, rollout went on")
        assert temp_files(h.site) == [], f"{where}: temporary files left"
        assert_whole_json_files(h)
        found = check_state_and_files(h, steps, f"{where}: after SIGTERM", allow_failed=True)
        trials.append({"fault": fault, "fired": fired, "outcomes": sorted(seen), "state": found["state"],
                       "intent": found["intent"]})
        carried = saved_state(h.site)["message"] if found["state"] == "failed" else None
    # A clean start: the state agrees with the files, and the run under way ends.
    launch(h, None)
    assert wait_ready(h)
    check_state_and_files(h, steps, f"final restart (seed {seed})", allow_failed=True)
    if h.status()["state"] == "failed":
        try_call(h, "abort", name="app")
    if h.status()["state"] == "paused":
        h.call("resume", name="app")
    final = h.wait_status(lambda s: s["state"] in TERMINAL and s["snapshot_id"] is None, "the last run to end", 40)
    assert steps.whole() == "snapshot", final
    assert h.site.nginx_t().returncode == 0
    seen_load = load.finish()
    assert seen_load.socket_errors == 0 and seen_load.status_5xx == 0, seen_load.summary()
    with capsys.disabled():
        outcomes = collections.Counter(o for t in trials for o in t["outcomes"] or ["did not fire"])
        print(f"\ndisk fault trials: {len(trials)} (seed {seed}), fired {sum(t['fired'] for t in trials)}; "
              f"outcomes {dict(outcomes)}")
        for t in trials:
            print(f"  {t['fault']:<26} fired={t['fired']!s:<5} {', '.join(t['outcomes']) or '-'}; after SIGTERM "
                  f"{t['state']}{' (' + t['intent'] + ' intent)' if t['intent'] else ''}")


def nsenter(pid: int, *args: str) -> None:
    subprocess.run(["nsenter", "-t", str(pid), "-m", *args], check=True, capture_output=True, timeout=10)


def test_a_read_only_config_directory(rel_harness):
    h = rel_harness(steps=STEPS, step_interval="1s", wrap=["unshare", "-m", "--propagation", "private"],
                    daemon=False)
    steps = Steps(h.site, STEPS)
    conf_d = str(h.site.prefix / "conf.d")
    h.start_daemon()
    pid = h.daemon.pid
    nsenter(pid, "mount", "--bind", conf_d, conf_d)

    def read_only(ro: bool) -> None:
        nsenter(pid, "mount", "-o", f"remount,{'ro' if ro else 'rw'},bind", conf_d)

    # The mount is the daemon's alone: the test (and nginx) still write there.
    read_only(True)
    probe = h.site.prefix / "conf.d" / "test-can-write"
    probe.write_text("x")
    probe.unlink()
    h.load(rate=150)

    # 1. At start: the first step cannot be written; nothing changed, the run ends rolled back.
    result = h.cli("start", "app")
    assert result.returncode == 1 and "Read-only file system" in result.stderr, result.stderr
    st = h.status()
    assert st["state"] == "rolled_back" and "Read-only file system" in st["message"], st
    assert steps.whole() == "snapshot"

    # 2. Mid-rollout: the next step change fails, the rollout pauses at the step that passed.
    read_only(False)
    h.start_rollout()
    h.wait_status(lambda s: s["state"] == "progressing" and s["step_started_at"] is not None, "the first step")
    read_only(True)
    st = h.wait_state("paused", "rolled_back", "aborted", "failed", "promoted")
    assert st["state"] == "paused" and st["canary_percent"] == 10, st["message"]
    assert "Read-only file system" in st["paused_reason"], st["paused_reason"]
    assert steps.whole() == "10" and saved_state(h.site)["expected_files"] == steps.hashes("10")
    assert temp_files(h.site) == []

    # 3. Writable again: resume goes on; read-only once more when the operator aborts: the restore
    #    cannot be written, the rollout is failed (loudly) and nginx keeps serving the step it had.
    read_only(False)
    h.call("resume", name="app")
    h.wait_status(lambda s: s["step"] == 1 and s["step_started_at"] is not None or s["state"] != "progressing",
                  "the second step")
    read_only(True)
    result = h.cli("abort", "app")
    assert result.returncode == 1 and "Read-only file system" in result.stderr, result.stderr
    st = h.status()
    assert st["state"] == "failed" and st["message"].startswith("FAILED: aborted"), st["message"]
    assert "nginx-canary abort app" in st["message"]
    assert steps.whole() == "50"
    saved = saved_state(h.site)
    assert saved["state"] == "failed" and disk_hashes(list(saved["expected_files"])) == saved["expected_files"]
    seen = h.probe(100)
    assert seen.status_2xx == 100, seen.summary()
    assert [r["event"] for r in history(h.site)][-1] == "restore_failed"

    # 4. Fixed: abort retries the restore it owes.
    read_only(False)
    result = h.cli("abort", "app")
    assert result.returncode == 0, result.stderr
    st = h.status()
    assert st["state"] == "aborted" and st["snapshot_id"] is None, st
    assert steps.whole() == "snapshot"
    assert temp_files(h.site) == []
    assert h.site.nginx_t().returncode == 0
