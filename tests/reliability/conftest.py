"""Harness for the reliability suite (issue #7): real nginx, real backends, the real daemon, no mocks.

It builds on :mod:`tests.daemon.conftest` (its :class:`Harness`, load threads and
teardown) with a site made for breaking things:

* **Two files per step change.** The upstream ``backend`` keeps the stable
  server in ``conf.d/upstream.conf`` and pulls the canary in from
  ``conf.d/canary.inc`` (``include`` inside the upstream block), so every step
  change and every restore writes two files: a crash can land between them,
  and the transaction's ``during_restore`` fault point (between two restored
  files) is reachable.
* **A root the nginx workers can reach** (a fresh ``/tmp`` directory, 0755):
  after a log rotation the workers (user nobody) reopen the access log
  themselves, which they cannot do under pytest's 0700 base directory.
* **Backends** are the demo apps (``backends="apps"``) or, for saturating
  load, server blocks of the same nginx answering ``return 200`` with their
  own access log off (``backends="nginx"``): wrk then measures nginx and the
  daemon, not a Python backend.
* **Extra YAML** (``metrics_listen``, ``control_group``) and a command prefix for
  the daemon (``wrap``: ``unshare -m ...`` for a read-only bind mount).

:class:`Steps` knows the bytes every managed file may hold (the snapshot's, or
those of each step, computed with the config engine's own ``plan_split`` on a
copy of the original files) and checks files, ``nginx -t`` and the saved state
against them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import psutil
import pytest

from nginx_canary.daemon import control_socket

from nginx_canary import faults
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import CanaryError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.operations import plan_split
from tests.daemon.conftest import FAST_ANALYSIS, WAIT, Harness, records, sha256  # noqa: F401 - re-exported

__all__ = ["FAST_ANALYSIS", "WAIT", "Harness", "RelSite", "Steps", "records", "sha256"]

UPSTREAM_TWO_FILES = """\
# v1 and v1b are stable; v2, the canary, is staged down in pool.inc
upstream backend {{
    server 127.0.0.1:{v1} weight=2;
    include conf.d/pool.inc;
    keepalive 32;
}}
"""

POOL_INC = """\
# the second stable server, and the canary (a rollout steps their weights)
server 127.0.0.1:{v1b} weight=2;
server 127.0.0.1:{v2} down;
"""

# Backends answered by nginx itself (no Python in the request path); their requests are not logged.
NGINX_BACKENDS = """\
    server {{ listen 127.0.0.1:{v1}; access_log off; location / {{ return 200 "v1\\n"; }} }}
    server {{ listen 127.0.0.1:{v1b}; access_log off; location / {{ return 200 "v1\\n"; }} }}
    server {{ listen 127.0.0.1:{v2}; access_log off; location / {{ return 200 "v2\\n"; }} }}
"""

#: The files a rollout of ``backend`` manages (relative to the nginx prefix), and every config file.
MANAGED = ("conf.d/pool.inc", "conf.d/upstream.conf")


class NoApp:
    """Stands where the harness expects a demo app when nginx itself answers for the backend."""

    def stop(self, timeout: float = 5.0) -> None:
        return None


@dataclass
class RelSite(DemoSite):
    """A :class:`DemoSite` with the canary in a second file; see the module docstring."""

    backends: str = "apps"
    extra_yaml: List[str] = field(default_factory=list)
    wrap: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ports.setdefault("v1b", free_port())

    @property
    def pool_inc(self) -> Path:
        return self.prefix / "conf.d" / "pool.inc"

    @property
    def v1b(self) -> str:
        return f"127.0.0.1:{self.ports['v1b']}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def write(self, **kwargs: Any) -> None:
        super().write(**kwargs)
        self.upstream_conf.write_text(UPSTREAM_TWO_FILES.format(**self.ports))
        self.pool_inc.write_text(POOL_INC.format(**self.ports))
        if self.backends == "nginx":
            text = self.conf.read_text()
            # The backends go at the end of http {} (the file's last closing brace).
            head, tail = text.rsplit("}\n", 1)
            self.conf.write_text(head + NGINX_BACKENDS.format(**self.ports) + "}\n" + tail)

    def write_daemon_config(self, **kwargs: Any) -> None:
        super().write_daemon_config(**kwargs)
        if self.extra_yaml:
            with open(self.daemon_config, "a") as fh:
                fh.write("\n".join(self.extra_yaml) + "\n")

    def daemon_command(self, python: str, extra: Sequence[str] = ()) -> List[str]:
        return [*self.wrap, *super().daemon_command(python, extra)]

    def nginx_t(self) -> subprocess.CompletedProcess:
        return subprocess.run([self.nginx_bin, "-t", "-q", "-p", str(self.prefix), "-c", str(self.conf)],
                              capture_output=True, text=True, timeout=30)

    def managed_bytes(self) -> Dict[str, bytes]:
        return {rel: (self.prefix / rel).read_bytes() for rel in MANAGED}

    def reopen_logs(self) -> None:
        """What logrotate's postrotate does: USR1 to the master."""
        pid = self.nginx_pid()
        assert pid is not None
        os.kill(pid, signal.SIGUSR1)

    def kill_nginx(self) -> None:
        """SIGKILL the master and every worker: nginx crashed."""
        pid = self.nginx_pid()
        assert pid is not None
        master = psutil.Process(pid)
        procs = [master] + master.children(recursive=True)
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        self.started = False


class Steps:
    """The bytes each managed file may hold during the rollouts of one site, and the checks built on them.

    ``sets[label]`` maps each managed file (relative path) to its bytes for
    ``label``: ``"snapshot"`` (the original files) or a step's percent
    (``"10"``, ``"50"``, ``"100"``), computed with ``plan_split`` on a copy of
    the original files, each step on the files of the one before (a ``down``
    server keeps the weight it had, so step 100's bytes depend on step 50's). Every rollout of these tests starts from the original
    files (``on_success: restore``, rollbacks and aborts restore them).
    """

    def __init__(self, site: RelSite, steps: Sequence[object]) -> None:
        self.site = site
        self.original_conf = site.conf.read_bytes()
        originals = site.managed_bytes()
        self.sets: Dict[str, Dict[str, bytes]] = {"snapshot": originals}
        with tempfile.TemporaryDirectory(prefix="nc-steps-") as tmp:
            copy = Path(tmp)
            (copy / "conf.d").mkdir()
            (copy / "nginx.conf").write_bytes(self.original_conf)
            for rel, data in originals.items():
                (copy / rel).write_bytes(data)
            for path in (site.prefix / "conf.d").glob("*.conf"):
                if not (copy / "conf.d" / path.name).exists():
                    shutil.copyfile(path, copy / "conf.d" / path.name)
            for step in steps:
                # Each step is planned on the files of the step before, as the daemon steps through them.
                label = str(step)
                config = load_config(str(copy / "nginx.conf"), logs=False)
                # As the daemon's change snapshots tell it: each file as it was before the steps.
                before = {os.path.realpath(copy / rel): data for rel, data in originals.items()}
                for change in plan_split(config, "backend", [site.v2], Fraction(label),
                                         originals=lambda path, now: before.get(os.path.realpath(path), now)).changes:
                    Path(change.path).write_bytes(change.new)
                self.sets[label] = {rel: (copy / rel).read_bytes() for rel in MANAGED}
        for rel in MANAGED:
            # Sanity: every step changes both files, so a mixed pair is always recognisable.
            assert len({files[rel] for files in self.sets.values()}) == len(self.sets), rel

    def labels_of(self, rel: str, data: bytes) -> List[str]:
        return [label for label, files in self.sets.items() if files[rel] == data]

    def per_file(self) -> Dict[str, List[str]]:
        """For each managed file, the labels whose bytes it holds; fails if one holds anything else."""
        now = self.site.managed_bytes()
        found = {rel: self.labels_of(rel, data) for rel, data in now.items()}
        for rel, labels in found.items():
            assert labels, f"{rel} holds bytes of no step and not the snapshot:\n{now[rel].decode(errors='replace')}"
        assert self.site.conf.read_bytes() == self.original_conf, "nginx.conf changed"
        return found

    def whole(self) -> str:
        """The one label all managed files agree on; fails on a mixed set."""
        found = self.per_file()
        common = set.intersection(*(set(labels) for labels in found.values()))
        assert len(common) == 1, f"the managed files come from different steps: {found}"
        return common.pop()

    def hashes(self, label: str) -> Dict[str, str]:
        return {str(self.site.prefix / rel): sha256(data) for rel, data in self.sets[label].items()}

    def label_of_hashes(self, hashes: Dict[str, str]) -> Optional[str]:
        for label in self.sets:
            if hashes == self.hashes(label):
                return label
        return None

TERMINAL = ("promoted", "rolled_back", "aborted")


def check_state_and_files(h: Harness, steps: Steps, where: str, *, allow_failed: bool = False) -> Dict[str, Any]:
    """The invariants that hold whenever the daemon is not running (killed, stopped, or frozen with SIGSTOP).

    * each managed file holds the snapshot's bytes or a step's; all of them
      the same step's unless a transaction is in flight (its journal exists);
    * nginx.conf is untouched;
    * the saved state's ``expected_files`` are the files on disk, or the state
      holds a recognisable intent: a step change in flight (``progressing``
      without ``step_started_at``) whose ``expected_files`` are its target
      step's, or a restore still owed (a final state with a ``snapshot_id``)
      whose files are either those it started from or the snapshot's; and a
      journal on disk always comes with such an intent.

    Returns what was found (state, label of the files, journal phase, intent, per-file labels).
    """
    per_file = steps.per_file()
    journal_path = h.site.state_dir / "journal.json"
    journal = json.loads(journal_path.read_bytes()) if journal_path.exists() else None
    try:
        st = saved_state(h.site)
    except FileNotFoundError:
        st = {"state": "idle", "expected_files": {}, "snapshot_id": None, "step_started_at": None, "message": ""}
    step_change = st["state"] == "progressing" and st["step_started_at"] is None
    restore_owed = st["state"] in TERMINAL + ("failed",) and st["snapshot_id"] is not None
    if not allow_failed:
        assert st["state"] != "failed", f"{where}: state failed: {st['message']}"
    if journal is not None:
        # A transaction is in flight: only ever inside a step change or a restore, whose intent is saved first.
        assert step_change or restore_owed, f"{where}: a journal without an intent in the state: {st}"
        label = None
    else:
        label = steps.whole()
    expected = st["expected_files"]
    if not expected:
        assert st["state"] == "idle", f"{where}: {st}"
        assert label == "snapshot", f"{where}: an idle rollout but files at step {label}"
        return {"state": "idle", "label": label, "journal": None, "intent": None, "per_file": None}
    on_disk = disk_hashes(list(expected))
    if step_change:
        # The intent names its target step: expected_files are that step's files.
        assert steps.label_of_hashes(expected) == st["canary_percent"], f"{where}: intent {st}"
    elif restore_owed:
        assert steps.label_of_hashes(expected) is not None, f"{where}: restore intent {st}"
        if journal is None:
            assert on_disk in (expected, steps.hashes("snapshot")), f"{where}: files at {label}, state {st}"
    else:
        assert journal is None
        assert on_disk == expected, (f"{where}: the state disagrees with the files: files at {label}, "
                                     f"state {st['state']} step {st['step_index']}: {st['message']}")
    return {"state": st["state"], "label": label, "journal": journal and journal.get("phase"),
            "intent": "step change" if step_change else "restore" if restore_owed else None,
            "per_file": per_file if journal is not None else None}


def saved_state(site: DemoSite) -> Dict[str, Any]:
    return json.loads((site.state_dir / "rollouts" / "app.json").read_text())


def disk_hashes(paths: Sequence[str]) -> Dict[str, str]:
    return {p: sha256(Path(p).read_bytes()) for p in paths}


def history(site: DemoSite) -> List[Dict[str, Any]]:
    """Every complete record of the history file (a torn last line, left by a kill, is skipped like readers do)."""
    path = site.state_dir / "rollouts" / "app.history.jsonl"
    if not path.exists():
        return []
    out = []
    lines = path.read_bytes().split(b"\n")
    for n, line in enumerate(lines):
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            assert n == len(lines) - 1, f"a damaged history line that is not the last one: {line!r}"
    return out


def temp_files(site: DemoSite) -> List[str]:
    """Temporary files of atomic writes left in the config and state directories."""
    found = []
    for root in (site.prefix, site.state_dir):
        for path in root.rglob("*.nginx-canary.tmp"):
            found.append(str(path))
    return sorted(found)


def run_cli(args: Sequence[str], env: Dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nginx_canary", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def launch(h: Harness, fault: Optional[str] = None) -> subprocess.Popen:
    """Start the daemon with ``NGINX_CANARY_FAULTS=fault`` (or none); do not wait for it."""
    assert h.daemon is None or h.daemon.poll() is not None, "a daemon is already running"
    h.env.pop(faults.ENV, None)
    if fault:
        h.env[faults.ENV] = fault
    h.daemon_runs += 1
    with open(h.log_path(h.daemon_runs), "wb") as log:
        log.write(f"[test] NGINX_CANARY_FAULTS={fault or ''}\n".encode())
        log.flush()
        h.daemon = subprocess.Popen(h.site.daemon_command(sys.executable), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=h.env, cwd=str(h.tmp_path))
    h.env.pop(faults.ENV, None)
    return h.daemon


def wait_ready(h: Harness, timeout: float = WAIT) -> bool:
    """Wait until the daemon answers ping (True) or exits (False)."""
    proc = h.daemon
    assert proc is not None
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return False
        try:
            answer = control_socket.call(h.site.socket_path, "ping", timeout=5.0)
            if answer["pid"] == proc.pid:
                return True
        except CanaryError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the daemon answered nothing within {timeout:g} s:\n{h.daemon_log()}")
        time.sleep(0.03)


def kill_daemon(h: Harness) -> int:
    proc = h.daemon
    assert proc is not None
    if proc.poll() is None:
        proc.kill()
    return proc.wait(10)


def try_call(h: Harness, command: str, **args: Any) -> Tuple[Optional[Any], Optional[CanaryError]]:
    """A control call that may meet a dying daemon: (result, None) or (None, error)."""
    try:
        return control_socket.call(h.site.socket_path, command, args, timeout=60.0), None
    except CanaryError as exc:
        return None, exc


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT, h: Optional[Harness] = None,
             every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}" + (f"\n{h.daemon_log()}" if h is not None else ""))
        time.sleep(every)


def metrics(url: str) -> Dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text page (comments left out)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@pytest.fixture
def rel_harness(nginx_bin: str, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """``rel_harness(steps=..., step_interval=..., analysis=..., on_success=..., backends=..., extra_yaml=...,
    wrap=..., v1=..., v2=..., daemon=True)`` -> a running :class:`Harness` on a :class:`RelSite`.

    ``analysis`` is merged over :data:`FAST_ANALYSIS`. nginx (and the demo apps,
    unless ``backends="nginx"``) run when it returns, and the daemon too unless
    ``daemon=False``. Teardown is the daemon harness's (it fails the test if a
    process it started is left), then the site's root is removed.
    """
    made: List[Tuple[Harness, Path]] = []

    def make(*, steps: Sequence[object] = (10, 50, 100), step_interval: str = "1s",
             analysis: Optional[Dict[str, object]] = None, on_success: str = "restore", backends: str = "apps",
             extra_yaml: Sequence[str] = (), wrap: Sequence[str] = (), workers: int = 1,
             v1: Optional[Dict[str, Any]] = None, v2: Optional[Dict[str, Any]] = None,
             daemon: bool = True) -> Harness:
        assert not made, "one harness per test"
        root = Path(tempfile.mkdtemp(prefix="nc-rel-"))
        root.chmod(0o755)
        site = RelSite(root / "site", nginx_bin, workers=workers, backends=backends, extra_yaml=list(extra_yaml),
                       wrap=list(wrap))
        site.root.mkdir()
        site.write(steps=steps, step_interval=step_interval, analysis={**FAST_ANALYSIS, **(analysis or {})},
                   on_success=on_success)
        if backends == "apps":
            app1: Any = DemoApp("v1", port=site.ports["v1"], **(v1 or {}))
            app1b: Any = DemoApp("v1", port=site.ports["v1b"], **(v1 or {}))
            app2: Any = DemoApp("v2", port=site.ports["v2"], **(v2 or {}))
        else:
            app1, app1b, app2 = NoApp(), NoApp(), NoApp()
        harness = Harness(site, app1, app2, tmp_path)
        harness.v1b = app1b  # type: ignore[attr-defined]
        made.append((harness, root))
        if backends == "apps":
            for app in (app1, app1b, app2):
                app.start()
        site.start_nginx()
        if daemon:
            harness.start_daemon()
        return harness

    yield make
    for harness, root in made:
        problems = harness.close()
        harness.v1b.stop()  # type: ignore[attr-defined]
        log = harness.daemon_log()
        if log:
            print(log[-200_000:])
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems
