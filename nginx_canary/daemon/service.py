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
import shutil
import signal
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Optional, Tuple

from nginx_canary.nginx import operations
from nginx_canary.rollout.analysis import Verdict
from nginx_canary.rollout.applier import NginxSplitApplier
from nginx_canary.daemon.change_runner import ChangeRunner, OffLoopApplier
from nginx_canary.daemon.config_watch import ConfigWatcher
from nginx_canary.daemon.control_socket import ControlServer
from nginx_canary.domain import ACTIVE_STATES, check_step_interval, validate_name
from nginx_canary.errors import BadInputError, CanaryError, ControlError, StateError, UnknownRolloutError
from nginx_canary.inputs import parse_percent
from nginx_canary.logs.analyze import GROUP
from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.logs.window import Stats
from nginx_canary.logs.sources import format_for_file, log_for_upstream, named_format
from nginx_canary.nginx.conf import NginxConfig
from nginx_canary.integrations.metrics import DaemonMetrics, MetricsServer
from nginx_canary.integrations.gates import GateChecker, HttpChecker
from nginx_canary.permissions import describe, insecure_paths, insecure_state_dir
from nginx_canary.report.html import last_run
from nginx_canary.rollout.machine import Rollout
from nginx_canary.report.series import SeriesRecorder
from nginx_canary.daemon.sd_notify import Notifier
from nginx_canary.config.settings import DaemonSettings, RolloutSettings, load_settings
from nginx_canary.rollout.store import GATES, StateStore
from nginx_canary.statedir import StateDir
from nginx_canary.logs.live import LogTraffic
from nginx_canary.nginx.transaction import Transaction
from nginx_canary.integrations.webhooks import WebhookSender

log = logging.getLogger(__name__)

#: A command from the control socket: name, arguments, and the future its thread waits on.
_Queued = Tuple[str, Dict[str, Any], concurrent.futures.Future]

#: Longest sleep between two reads of the logs: lines are stamped when read,
#: so this bounds how late a request is counted in its one-second bucket.
POLL_EVERY = 0.25
#: The report's series goes on this long after a run ends, and fills at most this many missed seconds.
SERIES_AFTER_RUN = 5.0
SERIES_CATCH_UP = 10
#: How often the metrics get fresh copies of the figures (scrapes read the latest copy).
METRICS_EVERY = 1.0
#: How long a control-socket thread waits for the main loop to run its command.
COMMAND_TIMEOUT = 110.0
#: Settings whose change needs a restart rather than a SIGHUP.
_RESTART_KEYS = ("nginx", "state_dir", "control_socket", "control_group", "metrics_listen")
#: Rollout settings that a running rollout cannot take over mid-run.
_RUN_KEYS = ("upstream", "canary", "access_log", "log_format")


def operation_settings(settings: DaemonSettings) -> operations.Settings:
    """The config engine's settings for the daemon's nginx and state directory."""
    nginx = settings.nginx
    return operations.Settings(
        nginx_conf=os.path.abspath(nginx.conf),
        nginx_bin=shutil.which(nginx.binary) or nginx.binary,
        nginx_prefix=os.path.abspath(nginx.prefix) if nginx.prefix else None,
        state_dir=os.path.abspath(settings.state_dir),
    )


def check_rollout_against_config(rollout: RolloutSettings, config: NginxConfig) -> None:
    """The rollout's upstream exists and each canary address is one of its servers.

    Raises BadInputError naming the rollout and what is missing.
    """
    found = [u for u in config.upstreams if u.name == rollout.upstream]
    if not found:
        raise BadInputError(f"rollout {rollout.name!r}: no upstream {rollout.upstream!r} in {config.conf_path} "
                            "or its includes")
    addresses = {s.address for s in found[0].servers}
    missing = [a for a in rollout.canary if a not in addresses]
    if missing:
        raise BadInputError(f"rollout {rollout.name!r}: canary {', '.join(missing)} is not a server of upstream "
                            f"{rollout.upstream!r} (servers: {', '.join(sorted(addresses))})")


def upstream_files(config: NginxConfig, upstream: str) -> List[str]:
    """The files holding the ``server`` lines of every upstream called ``upstream`` (none if there is no such)."""
    return list(dict.fromkeys(server.file for u in config.upstreams if u.name == upstream for server in u.servers))


def open_traffic(rollout: RolloutSettings, config: NginxConfig, ops: operations.Settings) -> LogTraffic:
    """A :class:`LogTraffic` on the rollout's access log, in its format.

    Raises BadInputError (LogFormatError, LogReadError) naming the rollout.
    """
    nginx = ops.nginx()
    try:
        path = rollout.access_log or log_for_upstream(config, nginx, rollout.upstream)
        if rollout.log_format:
            spec = named_format(config, rollout.log_format)
        else:
            spec = format_for_file(config, nginx, path)
        return LogTraffic(config, rollout.upstream, rollout.canary, path, spec, watch_writes=False)
    except BadInputError as exc:
        raise type(exc)(f"rollout {rollout.name!r}: {exc}") from exc


class RunTraffic:
    """The rollout's :class:`TrafficSource`: the log windows, limited to the current run.

    A rollback's failing requests must not count against the next run started
    seconds later: ``groups`` looks only at whole seconds after ``since``.
    """

    def __init__(self, traffic: LogTraffic) -> None:
        self.traffic = traffic
        self.since: Optional[float] = None

    def groups(self, window_seconds: float, now: float) -> Tuple[Stats, Stats]:
        if self.since is not None:
            window_seconds = min(window_seconds, now - (int(self.since) + 1))
        if window_seconds < 1.0:
            # Not one whole second of this run yet: nothing to judge on.
            return Stats(), Stats()
        return self.traffic.groups(window_seconds, now)


@dataclass
class RolloutRuntime:
    """One configured rollout as the loop runs it."""

    rollout: Rollout
    traffic: RunTraffic
    series: SeriesRecorder
    next_check: float = 0.0  # monotonic time of the next check
    series_second: Optional[int] = None  # the last whole second put in the series
    series_until: Optional[float] = None  # record until then after a run ends (its last seconds)
    webhooks: Optional[WebhookSender] = None
    gates: Optional[GateChecker] = None
    http_checks: Optional[HttpChecker] = None
    observed: Optional[Verdict] = None  # judged while a change was under way, to act on next turn
    watcher: Optional[ConfigWatcher] = None  # edits of the upstream's files, reported by watchdog

    def attach_integrations(self) -> None:
        """(Re)build webhooks, gates and HTTP checks from the rollout's current settings."""
        self.close_integrations()
        rollout = self.rollout
        settings = rollout.settings
        if settings.webhooks:
            self.webhooks = WebhookSender(settings.name, settings.webhooks)
            rollout.listeners.append(self.webhooks.listener)
        gate_urls = settings.gates
        if any(getattr(gate_urls, name) for name in GATES):
            self.gates = GateChecker()
        rollout.gates = self._gate if self.gates is not None else None
        if settings.analysis.http_checks:
            self.http_checks = HttpChecker(settings.analysis.http_checks, settings.analysis.interval)
        rollout.extra_checks = self._extra_checks if self.http_checks is not None else None

    def _gate(self, name: str, now: float) -> Optional[Tuple[str, str]]:
        url = getattr(self.rollout.settings.gates, name, None)
        if url is None or self.gates is None:
            return None
        status = self.gates.check(name, url, now)
        return status.state, status.reason

    def _extra_checks(self, now: float) -> Tuple[Any, ...]:
        assert self.http_checks is not None
        self.http_checks.poll(now)
        return (self.http_checks.check(now),)

    def close(self) -> None:
        """Stop everything the runtime runs beside the loop (integrations, watcher, log tailer)."""
        self.close_integrations()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        self.traffic.traffic.close()

    def close_integrations(self) -> None:
        if self.webhooks is not None:
            if self.webhooks.listener in self.rollout.listeners:
                self.rollout.listeners.remove(self.webhooks.listener)
            self.webhooks.close(2.0)
            self.webhooks = None
        for poller in (self.gates, self.http_checks):
            if poller is not None:
                poller.close()
        self.gates = self.http_checks = None


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
            self._flush_series(name, runtime)
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
            observed, runtime.observed = runtime.observed, None
            due = self._due(runtime, mono)
            rollout = runtime.rollout
            if observed is not None and (not due or rollout.state.failure_streak >= rollout.failure_threshold):
                # Checks ran while a change was under way: act on the last one now, not at the next check
                # (and a rollback they called for is not undone by a fresh check that happens to pass).
                self._check(name, runtime, now, observed)
            elif due:
                self._check(name, runtime, now)
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
        for name, runtime in self.runtimes.items():
            self._record_series(name, runtime, now)

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

    def _record_series(self, name: str, runtime: RolloutRuntime, now: float) -> None:
        """One point per whole second per group for the report, while a run is active and a little after."""
        st = runtime.rollout.state
        if st.state in ACTIVE_STATES:
            runtime.series_until = now + SERIES_AFTER_RUN
        elif runtime.series_until is None:
            return
        second = int(now)
        last = second - 1 if runtime.series_second is None else runtime.series_second
        # Seconds a stalled loop missed are filled in (a few at most): windows keep them.
        for stamp in range(max(last + 1, second - SERIES_CATCH_UP), second + 1):
            # The whole second before `stamp` (the current one is still filling up).
            canary, stable = runtime.traffic.traffic.groups(1.0, stamp - 0.5)
            runtime.series.record(stamp, canary=canary.summary(), stable=stable.summary(),
                                  canary_percent=st.canary_percent, state=st.state)
        runtime.series_second = second
        if st.state not in ACTIVE_STATES and now >= runtime.series_until:
            runtime.series_until = None
            self._flush_series(name, runtime)

    @staticmethod
    def _flush_series(name: str, runtime: RolloutRuntime) -> None:
        try:
            runtime.series.flush()
        except StateError as exc:
            log.warning("rollout %s: cannot save the time series: %s", name, exc)

    def _check(self, name: str, runtime: RolloutRuntime, now: float, verdict: Optional[Verdict] = None) -> None:
        try:
            runtime.rollout.tick(now, verdict)
        except StateError as exc:
            log.error("rollout %s: %s", name, exc)
        except Exception:  # noqa: BLE001 - one rollout's bug must not stop the others' protection
            log.exception("rollout %s: the check failed", name)

    def _observe(self, name: str, runtime: RolloutRuntime, now: float) -> None:
        try:
            verdict = runtime.rollout.observe(now)
        except StateError as exc:
            log.error("rollout %s: %s", name, exc)
        except Exception:  # noqa: BLE001 - as in _check
            log.exception("rollout %s: the check failed", name)
        else:
            if verdict is not None:
                runtime.observed = verdict

    def _sleep_time(self, pumping: bool = False) -> float:
        """Seconds until the loop has work; ``pumping``: while a change is under way (commands then wait)."""
        if not pumping and (not self._commands.empty() or self._reload_wanted
                            or any(r.observed is not None for r in self.runtimes.values())):
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
                future.set_result(self.execute(command, args))
            except Exception as exc:  # noqa: BLE001 - every error travels back to the client
                if isinstance(exc, CanaryError):
                    # The client gets the message; the log keeps it for whoever reads it later.
                    log.info("daemon: command %s%s: %s", command, _for_rollout(args), exc)
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

    def execute(self, command: str, args: Dict[str, Any]) -> Any:
        """Run one control command on the loop's thread and return its JSON result.

        Raises BadInputError (unknown command or arguments), UnknownRolloutError,
        or the CanaryError of the rollout command.
        """
        handler = _COMMANDS.get(command)
        if handler is None:
            raise BadInputError(f"unknown command {command!r}")
        return handler(self, args)

    def _runtime(self, args: Dict[str, Any]) -> Tuple[str, RolloutRuntime]:
        name = validate_name(args.get("name"))
        runtime = self.runtimes.get(name)
        if runtime is None:
            known = ", ".join(self.runtimes) or "none"
            raise UnknownRolloutError(f"no rollout named {name!r} in {self.config_path} (configured: {known})")
        return name, runtime

    def _status_of(self, runtime: RolloutRuntime, now: float) -> Dict[str, Any]:
        status = runtime.rollout.status(now)
        status["access_log"] = runtime.traffic.traffic.reading()
        status["window_seconds"] = runtime.rollout.settings.analysis.window
        status["canary_servers"] = list(runtime.rollout.settings.canary)
        return status

    def cmd_status(self, args: Dict[str, Any]) -> Dict[str, Any]:
        now = self.clock()
        if args.get("name") is not None:
            _, runtime = self._runtime(args)
            rollouts = [self._status_of(runtime, now)]
        else:
            rollouts = [self._status_of(r, now) for r in self.runtimes.values()]
        lateness = self.check_lateness
        late = {"checks": lateness.count, "p50": lateness.quantile(0.5), "p99": lateness.quantile(0.99),
                "max": lateness.max}
        return {"daemon": {"pid": os.getpid(), "started_at": self.started_at, "config": self.config_path,
                           "now": now, "metrics": self._metrics_url(), "check_lateness_seconds": late},
                "rollouts": rollouts}

    def _metrics_url(self) -> Optional[str]:
        return self._metrics_server.url if self._metrics_server is not None else None

    def cmd_start(self, args: Dict[str, Any]) -> Dict[str, Any]:
        name, runtime = self._runtime(args)
        steps = args.get("steps")
        parsed: Optional[List[Fraction]] = None
        if steps is not None:
            if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
                raise BadInputError("steps must be a list of percents")
            parsed = [parse_percent(s) for s in steps]
        interval = args.get("step_interval")
        if interval is not None:
            interval = check_step_interval(interval)
        now = self.clock()
        previous_since = runtime.traffic.since
        runtime.traffic.since = now
        try:
            runtime.rollout.start(now, steps=parsed, step_interval=interval)
        except CanaryError:
            if runtime.rollout.state.state not in ACTIVE_STATES:
                runtime.traffic.since = previous_since
            raise
        finally:
            runtime.next_check = self.monotonic() + runtime.rollout.settings.analysis.interval
            if runtime.rollout.state.started_at == now:
                # A new run began (even one rolled back at its first step): a new series.
                self._start_series(name, runtime, now)
        return self._status_of(runtime, now)

    @staticmethod
    def _start_series(name: str, runtime: RolloutRuntime, now: float) -> None:
        try:
            runtime.series.start_run(now)
        except StateError as exc:
            log.warning("rollout %s: cannot start the time series: %s", name, exc)
        runtime.series_second = int(now)
        runtime.series_until = now + SERIES_AFTER_RUN

    def cmd_pause(self, args: Dict[str, Any]) -> Dict[str, Any]:
        _, runtime = self._runtime(args)
        now = self.clock()
        reason = args.get("reason")
        runtime.rollout.pause(now, reason if isinstance(reason, str) and reason else None)
        return self._status_of(runtime, now)

    def cmd_resume(self, args: Dict[str, Any]) -> Dict[str, Any]:
        _, runtime = self._runtime(args)
        now = self.clock()
        runtime.rollout.resume(now)
        return self._status_of(runtime, now)

    def cmd_promote(self, args: Dict[str, Any]) -> Dict[str, Any]:
        _, runtime = self._runtime(args)
        now = self.clock()
        runtime.rollout.promote(now, full=bool(args.get("full")))
        return self._status_of(runtime, now)

    def cmd_abort(self, args: Dict[str, Any]) -> Dict[str, Any]:
        _, runtime = self._runtime(args)
        now = self.clock()
        runtime.rollout.abort(now)
        return self._status_of(runtime, now)

    def cmd_history(self, args: Dict[str, Any]) -> Dict[str, Any]:
        limit = args.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise BadInputError(f"limit must be a positive number, not {limit!r}")
        if args.get("name") is not None:
            names = [self._runtime(args)[0]]
        else:
            names = list(self.runtimes)
        records: List[Dict[str, Any]] = []
        for name in names:
            for record in self.store.history(name, limit):
                records.append({"rollout": name, **record})
        records.sort(key=lambda r: (r.get("time") or 0.0))
        if limit is not None:
            records = records[-limit:]
        return {"records": records}

    def cmd_report(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The last run's history and time series, for ``nginx-canary report``."""
        name, runtime = self._runtime(args)
        return {"history": last_run(self.store.history(name)), "points": runtime.series.points()}

    def cmd_ping(self, args: Dict[str, Any]) -> Dict[str, Any]:
        return {"pid": os.getpid(), "started_at": self.started_at, "metrics": self._metrics_url()}

    # -- SIGHUP ---------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the YAML. A broken file changes nothing (the error is logged).

        Idle and finished rollouts take every new setting; an active rollout
        takes new thresholds and timings, but keeps its upstream, canary and
        log (changing those mid-run would judge one release on another's
        traffic). Rollouts added to the file start idle; a removed rollout
        that is active keeps running until it ends, an inactive one goes away.
        nginx, state_dir, control_socket, control_group and metrics_listen
        need a restart.
        """
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
        for key in _RESTART_KEYS:
            if getattr(new, key) != getattr(self.settings, key):
                log.warning("daemon: SIGHUP: %s changed; restart the daemon to apply it", key)
        try:
            config = operations.read_config(self.ops)
        except CanaryError as exc:
            log.error("daemon: SIGHUP: keeping the running config: cannot read the nginx config: %s", exc)
            return
        kept: Dict[str, RolloutSettings] = {}
        for name, runtime in list(self.runtimes.items()):
            current = runtime.rollout.settings
            wanted = new.rollouts.get(name)
            active = runtime.rollout.state.state in ACTIVE_STATES or runtime.rollout.state.snapshot_id is not None
            if wanted is None:
                if active:
                    log.warning("rollout %s: removed from the config but %s; it runs on until it ends",
                                name, runtime.rollout.state.state)
                    kept[name] = current
                else:
                    runtime.close()
                    del self.runtimes[name]
                    if self.metrics is not None:
                        self.metrics.remove_rollout(name)
                    log.info("rollout %s: removed", name)
                continue
            run_changed = [k for k in _RUN_KEYS if getattr(wanted, k) != getattr(current, k)]
            if run_changed and active:
                log.error("rollout %s: SIGHUP: %s cannot change during a run; the rest of its settings are taken",
                          name, ", ".join(run_changed))
                wanted = replace(wanted, **{k: getattr(current, k) for k in _RUN_KEYS})
            elif run_changed:
                try:
                    replacement = self._build(wanted, config)
                except CanaryError as exc:
                    log.error("rollout %s: SIGHUP: keeping its old settings: %s", name, exc)
                    kept[name] = current
                    continue
                self._flush_series(name, runtime)
                runtime.close()
                self.runtimes[name] = replacement
                kept[name] = wanted
                log.info("rollout %s: new settings taken (%s)", name, ", ".join(run_changed))
                continue
            integrations = (current.webhooks, current.gates, current.analysis.http_checks, current.analysis.interval)
            runtime.rollout.reconfigure(wanted)
            if integrations != (wanted.webhooks, wanted.gates, wanted.analysis.http_checks, wanted.analysis.interval):
                runtime.attach_integrations()
            kept[name] = wanted
        for name, wanted in new.rollouts.items():
            if name in self.runtimes:
                continue
            try:
                self.runtimes[name] = self._build(wanted, config)
            except CanaryError as exc:
                log.error("rollout %s: SIGHUP: not added: %s", name, exc)
                continue
            kept[name] = wanted
            log.info("rollout %s: added", name)
        self.settings = replace(self.settings, rollouts=MappingProxyType({n: kept[n] for n in self.runtimes if n in kept}))
        log.info("daemon: SIGHUP: config re-read from %s", self.config_path)


def _for_rollout(args: Dict[str, Any]) -> str:
    """`` for rollout NAME`` when the command's arguments name one (shortened: it comes from the client)."""
    name = args.get("name") if isinstance(args, dict) else None
    return f" for rollout {str(name)[:80]!r}" if name is not None else ""


_COMMANDS: Dict[str, Callable[[Daemon, Dict[str, Any]], Any]] = {
    "status": Daemon.cmd_status,
    "start": Daemon.cmd_start,
    "pause": Daemon.cmd_pause,
    "resume": Daemon.cmd_resume,
    "promote": Daemon.cmd_promote,
    "abort": Daemon.cmd_abort,
    "history": Daemon.cmd_history,
    "report": Daemon.cmd_report,
    "ping": Daemon.cmd_ping,
}
