"""The rollout commands of the CLI: ``daemon`` runs the daemon, the others talk to it over the control socket."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

import click

from nginx_canary.daemon import control_socket
from nginx_canary.cli.context import CliContext
from nginx_canary.errors import (BadInputError, CanaryError, ControlError, DaemonNotRunningError,
                                 UnknownRolloutError)
from nginx_canary.inputs import parse_percent
from nginx_canary.report.series import read_series
from nginx_canary.domain import ACTIVE_STATES, State, check_steps, validate_name
from nginx_canary.rollout.store import RolloutState, StateStore
from nginx_canary.cli.views import format_history, format_status, format_watch_line, is_final, render_watch

ROLLOUT_EXIT_CODES_HELP = """\b
Exit codes:
  0  ok
  1  the command failed in the daemon (nginx rejected a step, a restore failed)
  2  bad usage, bad input or an unknown rollout name
  3  the daemon is not running
  4  another nginx-canary holds the lock
"""


def _call(obj: CliContext, command: str, **args: Any) -> Any:
    return control_socket.call(obj.socket, command, {k: v for k, v in args.items() if v is not None})


@click.command(epilog=ROLLOUT_EXIT_CODES_HELP)
@click.pass_obj
def daemon(obj: CliContext) -> None:
    """Run the rollout daemon in the foreground (logs one line per event to stderr).

    SIGTERM or Ctrl-C finish the step change under way, save and exit 0;
    SIGHUP re-reads the config file.
    """
    from nginx_canary.daemon.service import Daemon

    settings = obj.daemon_settings(required=True)
    assert settings is not None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("nginx_canary")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if click.get_current_context().find_root().params.get("debug") else logging.INFO)
    raise SystemExit(Daemon(settings, obj.config_path).run())


def _steps(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    # A clear error here rather than from the daemon.
    check_steps([parse_percent(part) for part in parts], spelled=parts)
    return parts


def _duration(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[float]:
    """A DURATION option (250ms, 10s, 5m) in seconds; the error names the option."""
    if value is None:
        return None
    from nginx_canary.config.syntax import parse_duration

    try:
        return parse_duration(value)
    except BadInputError as exc:
        raise BadInputError(f"{param.opts[0]}: {exc.message}") from None


@click.command(epilog=ROLLOUT_EXIT_CODES_HELP)
@click.argument("name")
@click.option("--steps", callback=_steps, metavar="P,P,...", help="Canary percents for this run, e.g. 5,20,50,100.")
@click.option("--step-interval", callback=_duration, metavar="DURATION", help="Bake time per step for this run, e.g. 30s.")
@click.option("--json", "as_json", is_flag=True, help="Print the rollout's status as JSON.")
@click.pass_obj
def start(obj: CliContext, name: str, steps: Optional[List[str]], step_interval: Optional[float], as_json: bool) -> None:
    """Start rollout NAME: snapshot the upstream's files and apply the first step."""
    status = _call(obj, "start", name=name, steps=steps, step_interval=step_interval)
    _print_status([status], as_json, single=True)


def _print_status(rollouts: List[Dict[str, Any]], as_json: bool, *, single: bool) -> None:
    if as_json:
        click.echo(json.dumps(rollouts[0] if single else rollouts, indent=2, sort_keys=True))
        return
    if not rollouts:
        click.echo("no rollouts configured")
    for status in rollouts:
        click.echo(format_status(status))


@click.command(epilog=ROLLOUT_EXIT_CODES_HELP)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: an object for NAME, else a list.")
@click.option("--watch", is_flag=True, help="Redraw NAME's status in place until it ends (Ctrl-C stops watching).")
@click.option("--interval", callback=_duration, metavar="DURATION", help="Refresh period of --watch (default 1s).")
@click.pass_obj
def status(obj: CliContext, name: Optional[str], as_json: bool, watch: bool, interval: Optional[float]) -> None:
    """State, step, canary share, canary vs stable figures in the window and the last check.

    With --watch (NAME required): on a terminal the view is redrawn in place
    every --interval (steps as a progress bar, time left in the step, canary
    vs stable request rate, 5xx rate and p99, the last verdict); otherwise
    one line per refresh (one JSON object per line with --json). Ends when
    the rollout is promoted, rolled back, aborted or failed, or on Ctrl-C.
    """
    if not watch:
        if interval is not None:
            raise BadInputError("--interval goes with --watch")
        result = _call(obj, "status", name=name)
        _print_status(result["rollouts"], as_json, single=name is not None)
        return
    if name is None:
        raise BadInputError("--watch needs a rollout NAME")
    watch_status(lambda: _call(obj, "status", name=name)["rollouts"][0], sys.stdout,
                 interval=1.0 if interval is None else interval, as_json=as_json)


#: How long ``status --watch`` keeps retrying a daemon that stopped answering before it gives up.
WATCH_GIVE_UP = 30.0
_HIDE_CURSOR, _SHOW_CURSOR, _CLEAR_LINE, _CLEAR_BELOW = "\x1b[?25l", "\x1b[?25h", "\x1b[2K", "\x1b[J"


def watch_status(fetch: Callable[[], Dict[str, Any]], out: TextIO, *, interval: float = 1.0,
                 as_json: bool = False, isatty: Optional[Callable[[], bool]] = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 width: Callable[[], int] = lambda: shutil.get_terminal_size().columns,
                 give_up: float = WATCH_GIVE_UP) -> None:
    """Show ``fetch()`` (a rollout's status) every ``interval`` seconds until the rollout ends or Ctrl-C.

    On a terminal (``isatty``, by default ``out.isatty``) each frame of
    :func:`status_view.render_watch` overwrites the previous one (cursor up
    over the old lines, each line cleared, the rest of the screen cleared;
    the cursor is hidden meanwhile and always shown again). Otherwise one
    line per refresh (:func:`status_view.format_watch_line`, or the status
    as JSON with ``as_json``). Returns when :func:`status_view.is_final`
    holds, or on KeyboardInterrupt (Ctrl-C ends the watch, not the rollout).

    A daemon that stops answering (DaemonNotRunningError, ControlError) is
    retried, the error shown, for ``give_up`` seconds; then its error is
    raised. The first fetch's error, and any other CanaryError, is raised at once.
    """
    tty = out.isatty() if isatty is None else isatty()
    drawn = 0
    last: Optional[Dict[str, Any]] = None
    failing_since: Optional[float] = None
    started = clock()
    ticks = 0
    try:
        if tty:
            out.write(_HIDE_CURSOR)
        while True:
            error: Optional[str] = None
            try:
                current = fetch()
            except (DaemonNotRunningError, ControlError) as exc:
                if last is None:
                    raise
                now = clock()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= give_up:
                    raise
                error = f"{exc} (retrying)"
            else:
                last, failing_since = current, None
            now = clock()
            assert last is not None
            if tty:
                lines = render_watch(last, width=width(), now=now, error=error)
                frame = (f"\x1b[{drawn}F" if drawn else "") + "".join(f"{_CLEAR_LINE}{line}\n" for line in lines)
                out.write(frame + _CLEAR_BELOW)
                drawn = len(lines)
            elif as_json:
                out.write(json.dumps(last if error is None else {**last, "watch_error": error}, sort_keys=True) + "\n")
            else:
                out.write(format_watch_line(last, now=now, error=error) + "\n")
            out.flush()
            if error is None and is_final(last):
                return
            ticks += 1
            sleep(max(0.0, started + ticks * interval - clock()))
    except KeyboardInterrupt:
        return
    finally:
        if tty:
            out.write(_SHOW_CURSOR)
            out.flush()


def _simple_command(command: str, help_text: str) -> click.Command:
    @click.command(command, help=help_text, epilog=ROLLOUT_EXIT_CODES_HELP)
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print the rollout's status as JSON.")
    @click.pass_obj
    def run(obj: CliContext, name: str, as_json: bool) -> None:
        _print_status([_call(obj, command, name=name)], as_json, single=True)

    return run


pause = _simple_command("pause", "Stop stepping rollout NAME (its checks and automatic rollback go on).")
resume = _simple_command("resume", "Go on stepping rollout NAME; the current step's bake time starts again.")
abort = _simple_command("abort", "Roll rollout NAME back to the files it started from; from failed, retry that restore.")


@click.command(epilog=ROLLOUT_EXIT_CODES_HELP)
@click.argument("name")
@click.option("--full", is_flag=True, help="Straight to 100 % and promoted, instead of the next step.")
@click.option("--json", "as_json", is_flag=True, help="Print the rollout's status as JSON.")
@click.pass_obj
def promote(obj: CliContext, name: str, full: bool, as_json: bool) -> None:
    """Move rollout NAME to its next step now (at the last step, or with --full: complete it)."""
    _print_status([_call(obj, "promote", name=name, full=full or None)], as_json, single=True)


@click.command(epilog=ROLLOUT_EXIT_CODES_HELP)
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N records.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@click.pass_obj
def history(obj: CliContext, name: Optional[str], limit: Optional[int], as_json: bool) -> None:
    """Every transition, failed check and verdict change, oldest first (all rollouts without NAME)."""
    records = _call(obj, "history", name=name, limit=limit)["records"]
    for record in records:
        click.echo(json.dumps(record, sort_keys=True) if as_json else format_history(record))


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (configs, logs, state) afterwards.")
@click.option("--report-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Where the three HTML reports go [default: the system's temp directory].")
@click.option("--fleet", is_flag=True,
              help="The fleet tour instead: etcd, 3 nginx hosts and 3 daemons rolling out together (about 35 s).")
def demo(keep: bool, report_dir: Optional[str], fleet: bool) -> None:
    """Watch a healthy rollout get promoted, a failing and a slow one rolled back, on a private nginx (about 25 s).

    Everything runs on 127.0.0.1 from a temporary directory: nginx, demo apps
    v1 and v2, a load generator and the daemon. Ctrl-C stops it all cleanly.
    With --fleet: one rollout on three nginx hosts through a private etcd, in
    lock-step, rolled back on all three, and finished after its coordinator is
    SIGKILLed; the summary gives each host's timings.
    """
    if fleet:
        _fleet_demo(keep)
        return
    from nginx_canary.demo.run import Demo, format_summary

    try:
        report = Demo(keep=keep, report_dir=report_dir).run()
    except KeyboardInterrupt:
        click.echo("\ninterrupted: everything the demo started is stopped and its files removed", err=True)
        raise SystemExit(130) from None
    click.echo(format_summary(report))
    if not report.ok:
        states = ", ".join(f"{r.label}: {r.state}" for r in report.runs)
        raise CanaryError(f"the demo did not end as expected ({states})")


def _fleet_demo(keep: bool) -> None:
    from nginx_canary.demo import fleet_tour

    try:
        report = fleet_tour.FleetTour(keep=keep).run()
    except KeyboardInterrupt:
        click.echo("\ninterrupted: everything the fleet tour started is stopped and its files removed", err=True)
        raise SystemExit(130) from None
    click.echo(fleet_tour.format_summary(report))
    if not report.ok:
        states = ", ".join(f"{r.label}: {r.state}" for r in report.runs)
        raise CanaryError(f"the fleet tour did not end as expected ({states})")


def default_report_path(name: str, generated_at: float) -> str:
    """``./nginx-canary-report-NAME-YYYYmmdd-HHMMSS.html`` (local time)."""
    return f"nginx-canary-report-{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(generated_at))}.html"


def fetch_report_data(obj: CliContext, name: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], str]:
    """``(history, points, source)`` of rollout ``name``: from the daemon, else from the state dir.

    The daemon's ``report`` command answers ``{"history": [...], "points": [...]}``.
    When the daemon is not running (or is older and has no ``report``
    command), the files under ``STATE_DIR/rollouts/`` are read instead.
    Raises UnknownRolloutError when neither knows the rollout, BadInputError
    for an invalid name, StateError when the files cannot be read, the
    daemon's CanaryError otherwise.
    """
    validate_name(name)
    try:
        answer = _call(obj, "report", name=name)
    except DaemonNotRunningError:
        reason = "the daemon is not running"
    except BadInputError as exc:
        if isinstance(exc, UnknownRolloutError) or "unknown command" not in exc.message:
            raise
        reason = "the daemon has no report command"
    else:
        if not isinstance(answer, dict) or not isinstance(answer.get("history"), list) \
                or not isinstance(answer.get("points"), list):
            raise ControlError("the daemon's report answer is not understood")
        return answer["history"], answer["points"], f"the daemon on {obj.socket}"
    state_dir = obj.settings.state_dir
    store = StateStore(state_dir)
    history = store.history(name)
    _, points = read_series(state_dir, name)
    if not history and not points and store.load(name) is None:
        raise UnknownRolloutError(f"no rollout named {name!r} in {state_dir} ({reason}; set --state-dir?)")
    return history, points, f"the files in {store.rollouts_dir} ({reason})"


@click.command(epilog=ROLLOUT_EXIT_CODES_HELP)
@click.argument("name")
@click.option("--output", "-o", metavar="FILE.html",
              help="Where to write the report (default ./nginx-canary-report-NAME-YYYYmmdd-HHMMSS.html, "
                   "or -2, -3 ... after it when that exists). An existing FILE is replaced; a symlink is refused.")
@click.pass_obj
def report(obj: CliContext, name: str, output: Optional[str]) -> None:
    """Write one self-contained HTML page on rollout NAME's last run and print its path.

    Step timeline, canary vs stable 5xx rate and p99 over time, every check
    verdict, the outcome and why. The data comes from the daemon, or, when it
    is not running, from the state dir (the page and stderr say which).
    """
    from nginx_canary.report.html import render_report
    from nginx_canary.report.file import write_report_file

    history, points, source = fetch_report_data(obj, name)
    generated_at = time.time()
    page = render_report(name, history, points, generated_at=generated_at, source=source)
    path = write_report_file(page, output or default_report_path(name, generated_at), chosen_by_user=bool(output))
    if not source.startswith("the daemon"):
        click.echo(f"nginx-canary: report from {source}", err=True)
    click.echo(os.path.abspath(path))


COMMANDS = (daemon, start, status, pause, resume, promote, abort, history, report, demo)


def rollouts_steering(state_dir: str, upstream: str) -> List[RolloutState]:
    """Saved rollouts that are running on ``upstream`` or still owe it a restore. Raises StateError."""
    found = []
    for state in StateStore(state_dir).load_all():
        owes_restore = state.state == State.FAILED or state.snapshot_id is not None
        if state.upstream == upstream and (state.state in ACTIVE_STATES or owes_restore):
            found.append(state)
    return found


def guard_set_weight(obj: CliContext, upstream: str, force: bool) -> List[str]:
    """Refuse a manual weight change on an upstream under an active rollout, or pause it first with ``force``.

    Returns notes to print. Raises BadInputError when refused; CanaryError
    from the daemon when the pause fails.
    """
    notes: List[str] = []
    for state in rollouts_steering(obj.settings.state_dir, upstream):
        if not force:
            raise BadInputError(
                f"upstream {upstream!r} is under rollout {state.name!r} ({state.state} at {state.canary_percent} %); "
                f"use `nginx-canary pause {state.name}`, `abort {state.name}`, or set-weight --force to pause it first")
        if state.state != State.PROGRESSING:
            notes.append(f"rollout {state.name!r} is {state.state}; changing the weights anyway (--force)")
            continue
        try:
            _call(obj, "pause", name=state.name, reason="paused for set-weight --force")
            notes.append(f"rollout {state.name!r} paused (--force); resume re-applies its step")
        except DaemonNotRunningError:
            notes.append(f"rollout {state.name!r} is progressing but no daemon answers on {obj.socket}; a daemon "
                         "that runs (elsewhere: --config/--socket) pauses it at its next check, one that starts "
                         "later at start-up, as the files changed")
    return notes
