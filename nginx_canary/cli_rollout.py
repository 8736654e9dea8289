"""The rollout commands of the CLI: ``daemon`` runs the daemon, the others talk to it over the control socket."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Dict, List, Optional

import click

from nginx_canary import control_socket
from nginx_canary.cli_context import CliContext
from nginx_canary.errors import BadInputError, CanaryError, DaemonNotRunningError
from nginx_canary.inputs import parse_percent
from nginx_canary.state import ACTIVE_STATES, RolloutState, StateStore
from nginx_canary.status_view import format_history, format_status

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
    from nginx_canary.daemon import Daemon

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
    for part in parts:
        parse_percent(part)  # a clear error here rather than from the daemon
    return parts


def _duration(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    from nginx_canary.settings import parse_duration

    try:
        return parse_duration(value)
    except BadInputError as exc:
        raise BadInputError(f"--step-interval: {exc.message}") from None


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
@click.pass_obj
def status(obj: CliContext, name: Optional[str], as_json: bool) -> None:
    """State, step, canary share, canary vs stable figures in the window and the last check."""
    result = _call(obj, "status", name=name)
    _print_status(result["rollouts"], as_json, single=name is not None)


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
def demo(keep: bool) -> None:
    """Watch a healthy rollout get promoted and a bad one rolled back, on a private nginx (about 45 s).

    Everything runs on 127.0.0.1 from a temporary directory: nginx, demo apps
    v1 and v2, a load generator and the daemon. Ctrl-C stops it all cleanly.
    """
    from nginx_canary.demo.run import Demo, format_summary

    try:
        report = Demo(keep=keep).run()
    except KeyboardInterrupt:
        click.echo("\ninterrupted: everything the demo started is stopped and its files removed", err=True)
        raise SystemExit(130) from None
    click.echo(format_summary(report))
    if not report.ok:
        states = ", ".join(f"{r.label}: {r.state}" for r in report.runs)
        raise CanaryError(f"the demo did not end as expected ({states})")


COMMANDS = (daemon, start, status, pause, resume, promote, abort, history, demo)


def rollouts_steering(state_dir: str, upstream: str) -> List[RolloutState]:
    """Saved rollouts that are running on ``upstream`` or still owe it a restore. Raises StateError."""
    found = []
    for state in StateStore(state_dir).load_all():
        owes_restore = state.state == "failed" or state.snapshot_id is not None
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
        if state.state != "progressing":
            notes.append(f"rollout {state.name!r} is {state.state}; changing the weights anyway (--force)")
            continue
        try:
            _call(obj, "pause", name=state.name, reason="paused for set-weight --force")
            notes.append(f"rollout {state.name!r} paused (--force); resume re-applies its step")
        except DaemonNotRunningError:
            notes.append(f"rollout {state.name!r} is progressing but the daemon is not running; it will pause "
                         "when the daemon starts, as the files changed")
    return notes
