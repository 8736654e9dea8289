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

import concurrent.futures
import logging
import os
import queue
import selectors
import signal
import time
from dataclasses import replace
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Callable, Dict, Optional, Tuple

from nginx_canary.config.model import DaemonSettings, RolloutSettings
from nginx_canary.config.settings import load_settings
from nginx_canary.daemon.change_runner import ChangeRunner, OffLoopApplier
from nginx_canary.daemon.commands import CommandHandlers, for_rollout
from nginx_canary.daemon.config_watch import ConfigWatcher
from nginx_canary.daemon.control_socket import ControlServer
from nginx_canary.daemon.reload import ReloadActions, apply_reload, plan_reload
from nginx_canary.daemon.runtime import (
    RolloutRuntime,
    RunTraffic,
    check_rollout_against_config,
    open_traffic,
    operation_settings,
    upstream_files,
)
from nginx_canary.daemon.sd_notify import Notifier
from nginx_canary.domain import ACTIVE_STATES
from nginx_canary.errors import BadInputError, CanaryError, ControlError, StateError
from nginx_canary.integrations.metrics import DaemonMetrics
from nginx_canary.integrations.metrics_server import MetricsServer
from nginx_canary.logs.analyze import GROUP
from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.nginx import operations
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.transaction import Transaction
from nginx_canary.permissions import describe, insecure_paths, insecure_state_dir
from nginx_canary.report.series import SeriesRecorder
from nginx_canary.rollout.applier import NginxSplitApplier
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.store import StateStore
from nginx_canary.statedir import StateDir

log = logging.getLogger(__name__)

#: A command from the control socket: name, arguments, and the future its thread waits on.
_Queued = Tuple[str, Dict[str, Any], concurrent.futures.Future]

#: Longest sleep between two reads of the logs: lines are stamped when read,
#: so this bounds how late a request is counted in its one-second bucket.
POLL_EVERY = 0.25
#: How often the metrics get fresh copies of the figures (scrapes read the latest copy).
METRICS_EVERY = 1.0
#: How long a control-socket thread waits for the main loop to run its command.
COMMAND_TIMEOUT = 110.0


class Daemon:
    """Runs every configured rollout. :meth:`run` blocks until SIGTERM/SIGINT (or :meth:`stop`)."""

    def __init__(self, settings: DaemonSettings, config_path: str, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, notifier: Optional[Notifier] = None) -> None:
        self.settings = settings
        self.notifier = notifier if notifier is not None else Notifier()
        self.metrics: Optional[DaemonMetrics] = DaemonMetrics() if settings.metrics_listen else None
        self._metrics_server: Optional[MetricsServer] = None
        self._next_metrics = 0.0
        self._next_watchdog = 0.0
        self._last_summary = ""
        #: Seconds each check of an active rollout ran after its scheduled time (status shows the figures).
        self.check_lateness = LatencySketch()
        self.config_path = config_path
        self.clock = clock
        self.monotonic = monotonic
        self.ops = operation_settings(settings)
        self.lock_timeout = 10.0
        self.store = StateStore(self.ops.state_dir, clock=clock)
        self.runtimes: Dict[str, RolloutRuntime] = {}
        self.started_at: Optional[float] = None
        self._commands: "queue.SimpleQueue[_Queued]" = queue.SimpleQueue()
        self._stopping = False
        self._reload_wanted = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector: Optional[selectors.BaseSelector] = None
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
        self.check_permissions()  # before anything is read from the state dir (the parse cache)
        config = operations.read_config(self.ops, save_cache=False)
        self.check_permissions(config)
        state_dir = StateDir(self.ops.state_dir)
        self._daemon_lock = state_dir.daemon_lock()
        if self.metrics is not None and self.settings.metrics_listen:
            self._metrics_server = self.metrics.serve(self.settings.metrics_listen)
            log.info("daemon: metrics on %s", self._metrics_server.url)
        with state_dir.writer_lock():
            recovered = Transaction(self.ops.state_dir, self.ops.nginx()).recover()
            self._remove_leftover_temps(state_dir, config)
        if recovered:
            log.warning("daemon: %s", recovered)
            config = operations.read_config(self.ops)
        for name, rollout_settings in self.settings.rollouts.items():
            self.runtimes[name] = self._build(rollout_settings, config)
        now = self.clock()
        self.started_at = now
        for runtime in self.runtimes.values():
            runtime.rollout.recover(now)  # what it did is logged (and in the history) by the rollout
        self._server = ControlServer(self.settings.control_socket, self._submit,
                                     control_group=self.settings.control_group)
        self._server.start()
        log.info("daemon: pid %d, %d rollout(s) (%s), control socket %s", os.getpid(), len(self.runtimes),
                 ", ".join(f"{n}: {r.rollout.state.state}" for n, r in self.runtimes.items()) or "none",
                 self.settings.control_socket)
        self._last_summary = self.summary()
        self.notifier.ready(self._last_summary)

    def _remove_leftover_temps(self, state_dir: StateDir, config: NginxConfig) -> None:
        """Delete the temporary files of writes a crash cut short (call with both locks held: no write is under way)."""
        managed = [path for r in self.settings.rollouts.values() for path in upstream_files(config, r.upstream)]
        for path, error in state_dir.remove_leftover_temps(managed):
            if error:
                log.warning("daemon: cannot remove %s, left by an interrupted write: %s", path, error)
            else:
                log.warning("daemon: removed %s, left by an interrupted write", path)

    def summary(self) -> str:
        """One line for systemd's STATUS=: each rollout's state and canary share."""
        parts = []
        for name, runtime in self.runtimes.items():
            st = runtime.rollout.state
            text = f"{name}: {st.state}"
            if st.state in ACTIVE_STATES and st.steps:
                text += f" {st.canary_percent} % (step {st.step_index + 1}/{len(st.steps)})"
            parts.append(text)
        return "; ".join(parts) or "no rollouts configured"

    def check_permissions(self, config: Optional[NginxConfig] = None) -> None:
        """Refuse to run on files others can write (see :mod:`nginx_canary.permissions`).

        Without ``config``: the daemon's config file, the state dir (and all
        in it) and the nginx binary; with it: nginx's main file, every file it
        includes and every module it loads.

        Raises BadInputError naming the first such file and who can write it,
        unless ``allow_insecure_permissions`` (then each is logged as a warning).
        """
        try:
            if config is None:
                binary = [self.ops.nginx_bin] if os.path.isabs(self.ops.nginx_bin) else []  # not in PATH: nginx -t says so
                found = insecure_paths([self.config_path, *binary]) + insecure_state_dir(self.ops.state_dir)
            else:
                nginx = self.ops.nginx()
                found = insecure_paths(list(config.files) + [nginx.full_path(m) for m in config.modules]
                                       + [path for r in self.settings.rollouts.values()
                                          for path in upstream_files(config, r.upstream)])
        except OSError as exc:
            raise BadInputError(f"refusing to start: cannot tell who can write {exc.filename}: {exc.strerror}") from exc
        if not found:
            return
        if self.settings.allow_insecure_permissions:
            for path, who in found:
                log.warning("daemon: %s is writable by %s (allowed by allow_insecure_permissions)", path, who)
            return
        raise BadInputError(f"refusing to start: {describe(found)}; whoever can write it can steer nginx, or run code "
                            "as root, through this daemon. Fix the owner, mode or ACL, or set "
                            "allow_insecure_permissions: true")

    def _build(self, rollout_settings: RolloutSettings, config: NginxConfig) -> RolloutRuntime:
        check_rollout_against_config(rollout_settings, config)
        applier = OffLoopApplier(NginxSplitApplier(
            self.ops, rollout_settings.upstream, rollout_settings.canary, lock_timeout=self.lock_timeout,
            on_reload=self.metrics.observe_reload if self.metrics is not None else None), self.changes)
        traffic = RunTraffic(open_traffic(rollout_settings, config, self.ops))
        try:
            rollout = Rollout(rollout_settings, self.store, applier, traffic, clock=self.clock)
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
        self._fail_queued("the daemon is stopping")
        self.changes.close()
        for name, runtime in self.runtimes.items():
            runtime.flush_series()
            runtime.close()
        if self._daemon_lock is not None:
            os.close(self._daemon_lock)  # last: nothing of this daemon writes after it
            self._daemon_lock = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def run(self) -> int:
        """Open, loop until asked to stop, close. Returns the exit status (0). Raises CanaryError from open()."""
        previous = self._install_signals()
        try:
            self.open()
            self.loop()
        finally:
            self.notifier.stopping()
            self.close()
            self.notifier.close()
            self._restore_signals(previous)
        log.info("daemon: stopped")
        return 0

    def stop(self) -> None:
        """Ask the loop to finish what it is doing and return (thread- and signal-safe)."""
        self._stopping = True
        self._wake()

    # -- the loop -----------------------------------------------------------------

    def loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        self._selector = selector
        self.changes.enable()
        try:
            while not self._stopping:
                self.turn()
                if self._stopping:
                    break
                self._wait(self._sleep_time())
        finally:
            self._selector = None
            selector.close()

    def _wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, until a command, a signal or a finished change wakes the loop."""
        if self._selector is not None:
            self._selector.select(timeout)
        self._drain_wake()

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
        self._record_all_series(now)
        self._run_queued()
        self._notify(mono)
        self._publish_metrics_when_due(mono)

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
        self._notify(mono)
        self._publish_metrics_when_due(mono)

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

    def _publish_metrics_when_due(self, mono: float) -> None:
        if self.metrics is not None and mono >= self._next_metrics:
            self._next_metrics = mono + METRICS_EVERY
            self._publish_metrics()

    def _publish_metrics(self) -> None:
        """Hand copies of every rollout's cumulative figures to the metrics (read by the scrape thread)."""
        assert self.metrics is not None
        for name, runtime in self.runtimes.items():
            traffic = runtime.traffic.traffic
            st = runtime.rollout.state
            self.metrics.update_rollout(name, state=st.state, canary_percent=float(Fraction(st.canary_percent)),
                                        canary=traffic.windows.cumulative(GROUP + "canary"),
                                        stable=traffic.windows.cumulative(GROUP + "stable"))
            analyzer = traffic.analyzer
            self.metrics.set_log_lines(analyzer.lines - analyzer.unparsed, analyzer.unparsed, source=name)

    def _notify(self, mono: float) -> None:
        if not self.notifier.enabled:
            return
        if self.notifier.watchdog_seconds is not None and mono >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = mono + self.notifier.watchdog_seconds
        summary = self.summary()
        if summary != self._last_summary:
            self._last_summary = summary
            self.notifier.status(summary)

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
        if not pumping and (not self._commands.empty() or self._reload_wanted
                            or any(r.rollout.checks.pending is not None for r in self.runtimes.values())):
            return 0.0
        if not (pumping and self.changes.urgent) and any(r.traffic.traffic.behind for r in self.runtimes.values()):
            return 0.0  # a log has more to read: read it now (in bounded bites, checks in between), not in 250 ms
        mono = self.monotonic()
        due = min((r.next_check for r in self.runtimes.values()), default=mono + POLL_EVERY)
        if self.notifier.watchdog_seconds is not None:
            due = min(due, self._next_watchdog)
        return max(0.0, min(due - mono, POLL_EVERY))

    # -- waking up ----------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except (BlockingIOError, OSError):
            pass  # already awake, or closed during shutdown

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _install_signals(self) -> Dict[int, Any]:
        previous = {}

        def stop(signum: int, frame: Any) -> None:
            log.info("daemon: %s received, finishing what is under way", signal.Signals(signum).name)
            self._stopping = True

        def reload(signum: int, frame: Any) -> None:
            self._reload_wanted = True

        for signum, handler in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, reload)):
            previous[signum] = signal.signal(signum, handler)
        previous[-1] = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        return previous

    @staticmethod
    def _restore_signals(previous: Dict[int, Any]) -> None:
        wakeup = previous.pop(-1, -1)
        signal.set_wakeup_fd(wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    # -- commands -----------------------------------------------------------------

    def _submit(self, command: str, args: Dict[str, Any]) -> Any:
        """Called on a control-socket thread: queue the command for the loop and wait for its answer."""
        if self._stopping:
            raise ControlError("the daemon is stopping")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((command, args, future))
        self._wake()
        try:
            return future.result(timeout=COMMAND_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise ControlError(f"{command!r} did not finish within {COMMAND_TIMEOUT:g} s") from None

    def _run_queued(self) -> None:
        while True:
            try:
                command, args, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.commands.execute(command, args))
            except Exception as exc:  # noqa: BLE001 - every error travels back to the client
                if isinstance(exc, CanaryError):
                    # The client gets the message; the log keeps it for whoever reads it later.
                    log.info("daemon: command %s%s: %s", command, for_rollout(args), exc)
                else:
                    log.exception("daemon: command %s failed", command)
                future.set_exception(exc)

    def _fail_queued(self, reason: str) -> None:
        while True:
            try:
                _, _, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(ControlError(reason))

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
