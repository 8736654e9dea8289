"""``nginx-canary daemon``: one main loop that polls the logs, runs the checks and executes commands.

Threads: the main loop owns every :class:`~nginx_canary.rollout.machine.Rollout`; the
control socket's threads only queue commands for it and wait for the answer.
A step change or restore (files, ``nginx -t``, reload, verification) runs on
the :class:`~nginx_canary.daemon.change_runner.ChangeRunner`'s worker thread while
the loop, waiting for it, goes on reading the logs, running the checks that
fall due (:meth:`Rollout.observe`: judged and counted, acted on once the
change is done); so a slow reload does not delay the checks. Commands wait
for the change to finish: an answer never shows a change half done.
The log tailers' watchdog threads only notice rotations (not each write: the
loop reads the logs on its own timer, and an inotify event per log line would
cost more CPU than the analysis itself); webhook, gate and HTTP-check threads
talk HTTP and hand results over. So a rollout is never touched by two threads,
and a command and a check never interleave.

The loop, per turn: read what nginx appended to each rollout's access log
(stamped with the current time), run the checks of every rollout whose
``analysis.interval`` is due, add the second's figures to the report series
(after the checks: its file appends must not make a check late), execute
queued commands, then sleep until the next check is due (at most
:data:`POLL_EVERY`) or a command, a signal or a finished change arrives.

Signals: SIGTERM and SIGINT finish what is under way (a signal only sets a
flag; the step change, restore or command running at that moment completes
and is saved), then the daemon closes its socket and exits 0. SIGHUP re-reads
the YAML (see :meth:`Daemon.reload`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Callable, Dict, Optional

from nginx_canary.config.model import DaemonSettings, RolloutSettings
from nginx_canary.config.settings import load_settings
from nginx_canary.daemon.change_runner import ChangeRunner, OffLoopApplier
from nginx_canary.daemon.commands import CommandHandlers
from nginx_canary.daemon.config_watch import ConfigWatcher
from nginx_canary.daemon.control_socket import ControlServer
from nginx_canary.daemon.fleet_link import FLEET_TICK, open_fleet
from nginx_canary.daemon.reload import ReloadActions, apply_reload, plan_reload
from nginx_canary.daemon.runtime import (
    RolloutRuntime,
    RunTraffic,
    check_rollout_against_config,
    open_traffic,
    operation_settings,
    upstream_files,
)
from nginx_canary.daemon.command_queue import CommandQueue
from nginx_canary.daemon.publish import Publisher, summary
from nginx_canary.daemon.sd_notify import Notifier
from nginx_canary.daemon.startup_checks import check_permissions, remove_leftover_temps
from nginx_canary.daemon.wakeup import WakePipe, install_signals, restore_signals
from nginx_canary.domain import ACTIVE_STATES
from nginx_canary.errors import CanaryError, ControlError, StateError
from nginx_canary.fleet.node import FleetNode
from nginx_canary.integrations.metrics import DaemonMetrics
from nginx_canary.integrations.metrics_server import MetricsServer
from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.nginx import operations
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.transaction import Transaction
from nginx_canary.report.series import SeriesRecorder
from nginx_canary.rollout.applier import NginxSplitApplier
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.store import StateStore
from nginx_canary.statedir import StateDir

log = logging.getLogger(__name__)

#: Longest sleep between two reads of the logs: lines are stamped when read,
#: so this bounds how late a request is counted in its one-second bucket.
POLL_EVERY = 0.25


class Daemon:
    """Runs every configured rollout. :meth:`run` blocks until SIGTERM/SIGINT (or :meth:`stop`)."""

    def __init__(self, settings: DaemonSettings, config_path: str, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, notifier: Optional[Notifier] = None) -> None:
        self.settings = settings
        self.notifier = notifier if notifier is not None else Notifier()
        self.metrics: Optional[DaemonMetrics] = DaemonMetrics() if settings.metrics_listen else None
        self._metrics_server: Optional[MetricsServer] = None
        self.publisher = Publisher(self.notifier, self.metrics)
        #: Seconds each check of an active rollout ran after its scheduled time (status shows the figures).
        self.check_lateness = LatencySketch()
        self.config_path = config_path
        self.clock = clock
        self.monotonic = monotonic
        self.ops = operation_settings(settings)
        self.lock_timeout = 10.0
        self.store = StateStore(self.ops.state_dir, clock=clock)
        self.runtimes: Dict[str, RolloutRuntime] = {}
        #: With a ``fleet`` section: this daemon's node (every rollout is the fleet's); None without.
        self.fleet: Optional[FleetNode] = None
        self._next_fleet_tick = 0.0
        self.started_at: Optional[float] = None
        self._stopping = False
        self._reload_wanted = False
        self._wakeup = WakePipe()
        self._wake = self._wakeup.wake
        self._queue = CommandQueue(self._wake)
        self._server: Optional[ControlServer] = None
        self._daemon_lock: Optional[int] = None
        self.commands = CommandHandlers(self)
        self.changes = ChangeRunner(wait=self._wait, wake=self._wake, pump=self._pump,
                                    next_wait=lambda: self._sleep_time(pumping=True))

    # -- life cycle ---------------------------------------------------------------

    def open(self) -> None:
        """Recover the transaction journal and every rollout, then listen on the control socket.

        Raises CanaryError (a rollout that does not fit the nginx config, a
        socket that cannot be set up, a state that cannot be read).
        """
        check_permissions(self.settings, self.ops, self.config_path)  # before the state dir is read (parse cache)
        config = operations.read_config(self.ops, save_cache=False)
        check_permissions(self.settings, self.ops, self.config_path, config)
        state_dir = StateDir(self.ops.state_dir)
        self._daemon_lock = state_dir.daemon_lock()
        if self.metrics is not None and self.settings.metrics_listen:
            self._metrics_server = self.metrics.serve(self.settings.metrics_listen)
            log.info("daemon: metrics on %s", self._metrics_server.url)
        with state_dir.writer_lock():
            recovered = Transaction(self.ops.state_dir, self.ops.nginx()).recover()
            remove_leftover_temps(self.settings, state_dir, config)
        if recovered:
            log.warning("daemon: %s", recovered)
            config = operations.read_config(self.ops)
        for name, rollout_settings in self.settings.rollouts.items():
            self.runtimes[name] = self._build(rollout_settings, config)
        now = self.clock()
        self.started_at = now
        for runtime in self.runtimes.values():
            runtime.rollout.recover(now)  # what it did is logged (and in the history) by the rollout
        if self.settings.fleet is not None:
            self.fleet = open_fleet(self.settings.fleet, self.runtimes, self.ops.state_dir)
            self.publisher.fleet = self.fleet
            log.info("daemon: fleet %s as host %s (etcd %s)", self.settings.fleet.name, self.settings.fleet.host,
                     ", ".join(self.settings.fleet.etcd))
        self._server = ControlServer(self.settings.control_socket, self._submit,
                                     control_group=self.settings.control_group)
        self._server.start()
        log.info("daemon: pid %d, %d rollout(s) (%s), control socket %s", os.getpid(), len(self.runtimes),
                 ", ".join(f"{n}: {r.rollout.state.state}" for n, r in self.runtimes.items()) or "none",
                 self.settings.control_socket)
        self.publisher.ready(self.runtimes)

    def summary(self) -> str:
        """One line for systemd's STATUS=: each rollout's state and canary share."""
        return summary(self.runtimes)

    def _build(self, rollout_settings: RolloutSettings, config: NginxConfig) -> RolloutRuntime:
        check_rollout_against_config(rollout_settings, config)
        applier = OffLoopApplier(NginxSplitApplier(
            self.ops, rollout_settings.upstream, rollout_settings.canary, lock_timeout=self.lock_timeout,
            on_reload=self.metrics.observe_reload if self.metrics is not None else None,
            context=rollout_settings.context), self.changes)
        traffic = RunTraffic(open_traffic(rollout_settings, config, self.ops))
        try:
            rollout = Rollout(rollout_settings, self.store, applier, traffic, log_trouble=traffic.unparsed_reason,
                              clock=self.clock)
        except CanaryError:
            traffic.traffic.close()
            raise
        if self.metrics is not None:
            rollout.listeners.append(self.metrics.listener(rollout_settings.name))
        runtime = RolloutRuntime(rollout, traffic, SeriesRecorder(self.ops.state_dir, rollout_settings.name))
        runtime.attach_integrations()
        runtime.watcher = ConfigWatcher(upstream_files(config, rollout_settings.upstream), self._wake)
        runtime.watcher.start()
        return runtime

    def close(self) -> None:
        """Stop listening, answer queued commands with an error, close the log tailers."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        self._queue.closed = True
        self._queue.fail_all("the daemon is stopping")
        self.changes.close()
        if self.fleet is not None:
            self.fleet.close(leave=True)  # its reports and coordinator role go now, not when the lease expires
            self.fleet = self.publisher.fleet = None
        for name, runtime in self.runtimes.items():
            runtime.flush_series()
            runtime.close()
        if self._daemon_lock is not None:
            os.close(self._daemon_lock)  # last: nothing of this daemon writes after it
            self._daemon_lock = None
        self._wakeup.close()

    def run(self) -> int:
        """Open, loop until asked to stop, close. Returns the exit status (0). Raises CanaryError from open()."""
        previous = install_signals(self._signalled_stop, self._signalled_reload, self._wakeup.write_fd)
        try:
            self.open()
            self.loop()
        finally:
            self.notifier.stopping()
            self.close()
            self.notifier.close()
            restore_signals(previous)
        log.info("daemon: stopped")
        return 0

    def stop(self) -> None:
        """Ask the loop to finish what it is doing and return (thread- and signal-safe)."""
        self._stopping = True
        self._wake()

    def _signalled_stop(self) -> None:
        self._stopping = True

    def _signalled_reload(self) -> None:
        self._reload_wanted = True

    # -- the loop -----------------------------------------------------------------

    def loop(self) -> None:
        self._wakeup.open_selector()
        self.changes.enable()
        try:
            while not self._stopping:
                self.turn()
                if self._stopping:
                    break
                self._wait(self._sleep_time())
        finally:
            self._wakeup.close_selector()

    def _wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, until a command, a signal or a finished change wakes the loop."""
        self._wakeup.wait(timeout)

    def turn(self) -> None:
        """One turn of the loop: reload if asked, read the logs, run due checks, run queued commands."""
        if self._reload_wanted:
            self._reload_wanted = False
            self.reload()
        now = self.clock()
        self._poll_logs(now)
        self._check_edits(now)
        mono = self.monotonic()
        for name, runtime in self.runtimes.items():
            self._check(name, runtime, now, self._due(runtime, mono))
        self._tick_fleet(now, mono)
        self._record_all_series(now)
        self._queue.run(self.commands.execute)
        self.publisher.turn(mono, self.runtimes)

    def _pump(self) -> None:
        """The loop's work while a step change or restore is under way on the worker thread.

        Reads the logs and judges the checks that fall due (counted, acted on
        by the next :meth:`turn`), keeps systemd's watchdog and the metrics
        fed. Nothing here changes nginx or answers a command. During a
        restore (``changes.urgent``) the logs are left unread and no check
        runs: the rollback is decided, and parsing a flood of log lines on
        this thread would hold the GIL the restore's thread needs.
        """
        now = self.clock()
        mono = self.monotonic()
        if not self.changes.urgent:
            self._poll_logs(now)
            for name, runtime in self.runtimes.items():
                if self._due(runtime, mono):
                    self._observe(name, runtime, now)
        self._record_all_series(now)
        self.publisher.turn(mono, self.runtimes)

    def _tick_fleet(self, now: float, mono: float) -> None:
        """The fleet's round when due (fleet/node.py): it may apply a step or restore through the change runner."""
        if self.fleet is None or mono < self._next_fleet_tick:
            return
        self._next_fleet_tick = mono + FLEET_TICK
        try:
            self.fleet.tick(now)
        except CanaryError as exc:
            log.error("fleet: %s", exc)
        except Exception:  # noqa: BLE001 - a fleet bug must not stop the loop (and the lone checks)
            log.exception("fleet: the tick failed")

    def _check_edits(self, now: float) -> None:
        """Check for drift at once each rollout whose files watchdog saw touched.

        Only from :meth:`turn`, never while a change is under way: the
        transaction's own half-done writes would look like someone else's.
        """
        for name, runtime in self.runtimes.items():
            if runtime.watcher is not None and runtime.watcher.take():
                try:
                    runtime.rollout.check_drift(now)
                except StateError as exc:
                    log.error("rollout %s: %s", name, exc)

    def _poll_logs(self, now: float) -> None:
        for name, runtime in self.runtimes.items():
            try:
                runtime.traffic.traffic.poll(now)
            except CanaryError as exc:
                log.warning("rollout %s: reading the access log: %s", name, exc)

    def _record_all_series(self, now: float) -> None:
        # After the checks: its file appends must not make a check late.
        for runtime in self.runtimes.values():
            runtime.record_series(now)

    def _due(self, runtime: RolloutRuntime, mono: float) -> bool:
        """Whether the rollout's check is due at ``mono``; if so, schedule the next one."""
        if mono < runtime.next_check:
            return False
        if runtime.rollout.state.state in ACTIVE_STATES and runtime.next_check:
            # How late this check runs against its schedule (the interval's jitter).
            self.check_lateness.add(mono - runtime.next_check)
        interval = runtime.rollout.settings.analysis.interval
        # Keep the cadence; after a long stall, start afresh rather than catch up in a burst.
        runtime.next_check = max(runtime.next_check + interval, mono + interval / 2)
        return True

    def _check(self, name: str, runtime: RolloutRuntime, now: float, due: bool) -> None:
        """Run the rollout's ``due`` check, or act on one judged during a step change (rollout/step_checks.py)."""
        try:
            runtime.rollout.check(now, due)
        except StateError as exc:
            log.error("rollout %s: %s", name, exc)
        except Exception:  # noqa: BLE001 - one rollout's bug must not stop the others' protection
            log.exception("rollout %s: the check failed", name)

    def _observe(self, name: str, runtime: RolloutRuntime, now: float) -> None:
        try:
            runtime.rollout.observe(now)
        except StateError as exc:
            log.error("rollout %s: %s", name, exc)
        except Exception:  # noqa: BLE001 - as in _check
            log.exception("rollout %s: the check failed", name)

    def _sleep_time(self, pumping: bool = False) -> float:
        """Seconds until the loop has work; ``pumping``: while a change is under way (commands then wait)."""
        if not pumping and (not self._queue.empty() or self._reload_wanted
                            or any(r.rollout.checks.pending is not None for r in self.runtimes.values())):
            return 0.0
        if not (pumping and self.changes.urgent) and any(r.traffic.traffic.behind for r in self.runtimes.values()):
            return 0.0  # a log has more to read: read it now (in bounded bites, checks in between), not in 250 ms
        mono = self.monotonic()
        due = min((r.next_check for r in self.runtimes.values()), default=mono + POLL_EVERY)
        if self.fleet is not None:
            due = min(due, self._next_fleet_tick)
        if self.notifier.watchdog_seconds is not None:
            due = min(due, self.publisher.next_watchdog)
        return max(0.0, min(due - mono, POLL_EVERY))

    def _submit(self, command: str, args: Dict[str, Any]) -> Any:
        """Called on a control-socket thread: queue the command for the loop and wait for its answer."""
        if self._stopping:
            raise ControlError("the daemon is stopping")
        return self._queue.submit(command, args)

    def metrics_url(self) -> Optional[str]:
        """Where the metrics are served, or None."""
        return self._metrics_server.url if self._metrics_server is not None else None

    # -- SIGHUP ---------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the YAML (see :mod:`nginx_canary.daemon.reload`). A broken file changes nothing (logged)."""
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.ready(self.summary())

    def _reload(self) -> None:
        try:
            new = load_settings(self.config_path)
        except CanaryError as exc:
            log.error("daemon: SIGHUP: keeping the running config: %s", exc)
            return
        try:
            config = operations.read_config(self.ops)
        except CanaryError as exc:
            for key in plan_reload(self.settings, new, {}, lambda name: False).restart_keys:
                log.warning("daemon: SIGHUP: %s changed; restart the daemon to apply it", key)
            log.error("daemon: SIGHUP: keeping the running config: cannot read the nginx config: %s", exc)
            return
        running = {name: runtime.rollout.settings for name, runtime in self.runtimes.items()}
        plan = plan_reload(self.settings, new, running, self._mid_run)
        actions = ReloadActions(build=lambda settings: self._build(settings, config), retire=_retire,
                                forget=self.metrics.remove_rollout if self.metrics is not None else _nothing)
        taken = apply_reload(plan, self.runtimes, running, actions)  # type: ignore[arg-type]
        self.settings = replace(self.settings, rollouts=MappingProxyType(taken))
        log.info("daemon: SIGHUP: config re-read from %s", self.config_path)

    def _mid_run(self, name: str) -> bool:
        st = self.runtimes[name].rollout.state
        return st.state in ACTIVE_STATES or st.snapshot_id is not None


def _retire(name: str, runtime: RolloutRuntime) -> None:
    runtime.flush_series()
    runtime.close()


def _nothing(name: str) -> None:
    return None
