"""The ``nginx-canary`` command line: options, output and exit codes only."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import click

from nginx_canary import __version__

from nginx_canary.cli.context import DEFAULT_CONFIG_PATH, CliContext
from nginx_canary.cli.lazy_group import LazyGroup
from nginx_canary.domain import percent_text
from nginx_canary.errors import CanaryError, ExitCode
from nginx_canary.inputs import parse_percent
from nginx_canary.nginx.model import UPSTREAM_CONTEXTS, NginxConfig, Upstream
from nginx_canary.nginx.reading import Settings
from nginx_canary.statedir import StateDir
from nginx_canary.text import printable, printable_lines

if TYPE_CHECKING:
    from nginx_canary.nginx.operations import Plan

# The commands of other modules, loaded when named (or for --help): a command
# pays only for the modules it uses at start-up (analyze on a big log: 0.1 s).
LAZY_COMMANDS = {
    **{name: f"nginx_canary.cli.rollout:{name}" for name in
       ("daemon", "start", "status", "pause", "resume", "promote", "abort", "history", "report", "demo")},
    "replay": "nginx_canary.cli.replay:replay",
    "snapshots": "nginx_canary.cli.snapshots:snapshots",
}

EXIT_CODES_HELP = """\b
Exit codes:
  0  ok
  1  nginx rejected the change or the reload did not take effect (files restored)
  2  bad usage or bad input (nothing changed)
  3  nginx is not running (nothing changed; --no-reload writes and tests without reloading)
  4  another nginx-canary holds the lock (nothing changed)
"""


@click.group(cls=LazyGroup, lazy_commands=LAZY_COMMANDS, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", envvar="NGINX_CANARY_CONFIG", default=None, type=click.Path(dir_okay=False),
              help=f"The daemon's YAML config [default: {DEFAULT_CONFIG_PATH}]; the options below default to its "
                   "values when it exists. [env NGINX_CANARY_CONFIG]")
@click.option("--socket", "socket_path", envvar="NGINX_CANARY_SOCKET", default=None, type=click.Path(dir_okay=False),
              help="The daemon's control socket [default: control_socket of the config, else "
                   "/run/nginx-canary/control.sock]. [env NGINX_CANARY_SOCKET]")
@click.option("--nginx-conf", envvar="NGINX_CANARY_NGINX_CONF", default=None, type=click.Path(dir_okay=False),
              help="nginx's main config file (nginx -c) [default: /etc/nginx/nginx.conf]. [env NGINX_CANARY_NGINX_CONF]")
@click.option("--nginx-bin", envvar="NGINX_CANARY_NGINX_BIN", default=None,
              help="nginx binary (searched in PATH) [default: nginx]. [env NGINX_CANARY_NGINX_BIN]")
@click.option("--nginx-prefix", envvar="NGINX_CANARY_NGINX_PREFIX", default=None,
              type=click.Path(file_okay=False), help="nginx's prefix (nginx -p), if it runs with one. [env NGINX_CANARY_NGINX_PREFIX]")
@click.option("--state-dir", envvar="NGINX_CANARY_STATE_DIR", default=None, type=click.Path(file_okay=False),
              help="Snapshots, journal, lock, rollout state [default: /var/lib/nginx-canary]. [env NGINX_CANARY_STATE_DIR]")
@click.option("--debug", envvar="NGINX_CANARY_DEBUG", is_flag=True, help="Show tracebacks. [env NGINX_CANARY_DEBUG]")
@click.version_option(__version__, prog_name="nginx-canary")
@click.pass_context
def cli(ctx: click.Context, config_file: Optional[str], socket_path: Optional[str], nginx_conf: Optional[str],
        nginx_bin: Optional[str], nginx_prefix: Optional[str], state_dir: Optional[str], debug: bool) -> None:
    """Canary releases for plain nginx: change an upstream's traffic split safely."""
    ctx.obj = CliContext(config_file=config_file, socket_path=socket_path, nginx_conf=nginx_conf,
                         nginx_bin=nginx_bin, nginx_prefix=nginx_prefix, state_dir=state_dir)
    # --debug is acted on by main(), which must know it even when parsing fails.


def pass_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Like ``click.pass_obj``, handing the command the resolved :class:`~nginx_canary.nginx.reading.Settings`."""
    def run(*args: Any, **kwargs: Any) -> Any:
        return command(click.get_current_context().obj.settings, *args, **kwargs)
    return functools.update_wrapper(run, command)


def _upstream_dict(upstream: Upstream) -> Dict[str, Any]:
    return {
        "name": upstream.name,
        "context": upstream.context,
        "file": upstream.file,
        "line": upstream.line,
        "servers": [
            {
                "address": s.address,
                "weight": s.weight,
                "flags": list(s.flags),
                "share_percent": round(upstream.share_percent(s), 2),
                "file": s.file,
                "line": s.line,
            }
            for s in upstream.servers
        ],
    }


def _print_upstreams(config: NginxConfig) -> None:
    if not config.upstreams:
        click.echo(f"no upstream blocks in {config.conf_path} or its includes")
    for upstream in config.upstreams:
        click.echo(f"upstream {upstream.name}  ({upstream.location})  in {upstream.context}")
        for s in upstream.servers:
            flags = " ".join(s.flags)
            click.echo(f"  {s.address:<30} weight={s.weight:<6} {percent_text(upstream.share_percent(s)):>6}%  {flags}".rstrip())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def upstreams(settings: Settings, as_json: bool) -> None:
    """List every upstream with file:line, its servers, weights, flags and traffic shares."""
    from nginx_canary.nginx import operations

    config = operations.list_upstreams(settings)
    if as_json:
        click.echo(json.dumps({"conf": config.conf_path, "upstreams": [_upstream_dict(u) for u in config.upstreams]}, indent=2))
    else:
        _print_upstreams(config)


CONTEXT_OPTION = click.option(
    "--context", type=click.Choice(UPSTREAM_CONTEXTS), default=None,
    help="Which block's upstream, when http {} and stream {} both have one of that name [default: http; "
         "an upstream only in stream {} is found without it].")


def _context_note(plan: Plan) -> str:
    """`` (stream)`` for an upstream outside http, so that the output says which one changed."""
    return "" if plan.upstream.context == "http" else f" ({plan.upstream.context})"


def _parse_percent_arg(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[Fraction]:
    return None if value is None else parse_percent(value)


@cli.command("set-weight", epilog=EXIT_CODES_HELP)
@click.argument("upstream")
@click.argument("percent", callback=_parse_percent_arg)
@click.option("--canary", "canary", multiple=True, required=True, metavar="ADDR",
              help="A canary server, by address as written in the upstream (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show the diff that would be applied; touch nothing.")
@click.option("--no-reload", is_flag=True, help="Write and nginx -t, but do not reload nginx.")
@click.option("--force", is_flag=True, help="If a rollout steers UPSTREAM, pause it first instead of refusing.")
@CONTEXT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def set_weight(obj: CliContext, upstream: str, percent: Fraction, canary: Sequence[str],
               dry_run: bool, no_reload: bool, force: bool, context: Optional[str], as_json: bool) -> None:
    """Give the --canary servers PERCENT (0-100) of UPSTREAM's traffic.

    Weights inside each group keep their ratios; 0 marks the canary servers
    down, 100 marks the stable servers down. On an upstream with `hash KEY
    consistent` the weights are out of 1000 and only grow for the canary, so a
    user who reached it stays on it (sticky). Only weight= and down change in the
    files. The change is tested with nginx -t, nginx is reloaded and the reload
    verified (new worker processes); on any failure every file is restored.
    An upstream under an active rollout is refused unless --force, which
    pauses the rollout through the daemon first.
    """
    from nginx_canary.nginx import operations

    settings = obj.settings
    guard_notes: List[str] = []
    # Rollouts steer http upstreams only, so a stream upstream of the same name is not theirs.
    if not dry_run and context != "stream" and os.path.isdir(StateDir(settings.state_dir).rollouts):
        from nginx_canary.cli.rollout import guard_set_weight

        guard_notes = guard_set_weight(obj, upstream, force)
        for note in guard_notes:
            click.echo(f"nginx-canary: {printable(note)}", err=True)
    result = operations.set_weight(settings, upstream, percent, canary, dry_run=dry_run, reload=not no_reload,
                                   context=context)
    plan = result.plan
    if as_json:
        reload = result.outcome.reload if result.outcome else None
        click.echo(json.dumps({
            "upstream": plan.upstream.name,
            "context": plan.upstream.context,
            "canary_percent": float(plan.split.canary_percent()),
            "sticky": plan.sticky_note(),
            "dry_run": dry_run,
            "changed_files": [c.path for c in plan.changes],
            "diff": plan.diff,
            "snapshot": result.outcome.snapshot_id if result.outcome else None,
            "reload": None if reload is None else {
                "master_pid": reload.master_pid, "old_workers": list(reload.old_workers),
                "new_workers": list(reload.new_workers), "milliseconds": round(reload.seconds * 1000, 1),
            },
            "notes": ([result.recovered] if result.recovered else []) + guard_notes + result.notes,
        }, indent=2))
        return
    if result.recovered:
        click.echo(printable(result.recovered), err=True)
    click.echo(printable_lines(plan.diff), nl=False)
    sticky = plan.sticky_note()
    if sticky is not None:
        click.echo(printable(sticky))
    for note in result.notes:
        click.echo(printable(note))
    share = percent_text(plan.split.canary_percent())
    if dry_run:
        click.echo(f"dry run: would give the canary {share} % of upstream {plan.upstream.name}{_context_note(plan)}; "
                   "nothing changed")
    elif result.outcome is not None:
        reload = result.outcome.reload
        if reload is None:
            click.echo(f"written and tested (nginx -t ok); not reloaded: canary {share} % once nginx reloads")
        else:
            click.echo(
                f"reloaded: canary {share} % of upstream {plan.upstream.name}{_context_note(plan)}; "
                f"master {reload.master_pid}, "
                f"workers {_pids(reload.old_workers)} -> {_pids(reload.new_workers)}, {reload.seconds * 1000:.0f} ms"
            )


def _pids(pids: Sequence[int]) -> str:
    return ",".join(str(p) for p in pids) or "-"


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("upstream", required=False)
@click.argument("percent", required=False, callback=_parse_percent_arg)
@click.option("--canary", "canary", multiple=True, metavar="ADDR", help="With UPSTREAM PERCENT: check this split too.")
@click.option("--offline", is_flag=True, help="Do not require a running nginx.")
@CONTEXT_OPTION
@pass_settings
def validate(settings: Settings, upstream: Optional[str], percent: Optional[Fraction],
             canary: Sequence[str], offline: bool, context: Optional[str]) -> None:
    """Run the checks set-weight runs, changing nothing.

    Parses the config and its includes, runs nginx -t and finds the running
    master. Given UPSTREAM PERCENT --canary ADDR, also checks that split.
    """
    from nginx_canary.nginx import operations

    if upstream is not None and percent is None:
        raise click.UsageError("give PERCENT with UPSTREAM")
    result = operations.validate(settings, offline=offline, upstream=upstream, percent=percent, canary=canary,
                                 context=context)
    config = result.config
    click.echo(f"config ok: {len(config.files)} file(s), {len(config.upstreams)} upstream(s)")
    click.echo("nginx -t ok")
    if result.master_pid is not None:
        click.echo(f"nginx running: master {result.master_pid}, workers {_pids(result.workers)}")
    if result.plan is not None:
        changed = len(result.plan.changes)
        click.echo(f"split ok: canary {percent_text(result.plan.split.canary_percent())} % of "
                   f"{result.plan.upstream.name}{_context_note(result.plan)} would change {changed} file(s)")


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _figures_row(label: str, fig: Dict[str, Any]) -> str:
    return (f"{label:<34} {fig['requests']:>9} {fig['errors_5xx']:>7} {fig['errors_4xx']:>7} "
            f"{fig['error_rate'] * 100:>6.2f}% {_ms(fig['p50']):>8} {_ms(fig['p95']):>8} {_ms(fig['p99']):>8} {_ms(fig['max']):>8}")


def _print_report(report: Dict[str, Any]) -> None:
    click.echo(f"lines {report['lines']}, unparsed {report['unparsed']}")
    header = f"{'':<34} {'requests':>9} {'5xx':>7} {'4xx':>7} {'5xx %':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    click.echo(header)
    servers = report["servers"]
    for name, fig in report["upstreams"].items():
        click.echo(_figures_row(f"upstream {name}", fig))
        for address, sfig in servers.items():
            if sfig["upstream"] == name:
                click.echo(_figures_row(f"  {address}", sfig))
    for group, fig in report.get("groups", {}).items():
        click.echo(_figures_row(f"group {group}", fig))
    for address, fig in report.get("forced", {}).items():
        # Reached through another upstream than --upstream (a tester's override): not in the figures above.
        click.echo(_figures_row(f"forced {address}", fig))
    for address, sfig in servers.items():
        if sfig["upstream"] is None:
            # An address that is not in the config came from the log: show it as data.
            click.echo(_figures_row(f"{printable(address)} (not in config)", sfig))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("logfiles", nargs=-1, metavar="[LOGFILE]...")
@click.option("--format", "format_name", metavar="NAME", help="A log_format of the nginx config (or combined).")
@click.option("--log-format", metavar="STRING", help="The log format itself, as in a log_format directive.")
@click.option("--escape", type=click.Choice(["default", "json", "none"]), default="default", show_default=True,
              help="escape= of --log-format.")
@click.option("--upstream", metavar="NAME", help="Only this upstream's servers.")
@click.option("--canary", multiple=True, metavar="ADDR", help="With --upstream: also report groups canary/stable.")
@click.option("--follow", is_flag=True, help="Follow the log live from its end (one LOGFILE, or the upstream's log).")
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between --follow snapshots.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per line with --follow).")
@pass_settings
def analyze(settings: Settings, logfiles: Sequence[str], format_name: Optional[str], log_format: Optional[str],
            escape: str, upstream: Optional[str], canary: Sequence[str], follow: bool, interval: float, as_json: bool) -> None:
    """Per-server and per-upstream requests, 5xx/4xx and latency percentiles from access logs.

    Without --format/--log-format, the format is the one of the access_log
    directive that writes LOGFILE in the nginx config. Rotated .gz files are
    read too. Every upstream attempt counts against its own server, so a
    request retried from a failing server to a healthy one counts as one
    failure and one success.
    """
    # Imported here so that set-weight does not pay for the log machinery at start-up.
    from nginx_canary.logs import operations as log_operations

    query = log_operations.LogQuery(format_name, log_format, escape, upstream, tuple(canary))
    if follow:
        if len(logfiles) > 1:
            raise click.UsageError("--follow takes at most one LOGFILE")

        def emit(report: Dict[str, Any]) -> None:
            if as_json:
                click.echo(json.dumps(report, sort_keys=True))
            else:
                click.echo(f"--- {time.strftime('%H:%M:%S')}")
                _print_report(report)

        try:
            log_operations.follow_log(settings, logfiles[0] if logfiles else None, query, interval=interval,
                                      emit=emit, should_stop=lambda: False)
        except KeyboardInterrupt:
            pass
        return
    prepared = log_operations.analyze_files(settings, list(logfiles), query)
    for warning in prepared.warnings:
        click.echo(f"nginx-canary: warning: {warning}", err=True)
    report = prepared.analyzer.report()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)



def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run the CLI, print errors as one line and exit with the documented code."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args or os.environ.get("NGINX_CANARY_DEBUG", "").lower() in ("1", "true", "yes", "on")
    try:
        cli.main(args=argv, prog_name="nginx-canary", standalone_mode=False)
    except CanaryError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"nginx-canary: error: {printable(str(exc))}", err=True)
        sys.exit(int(exc.exit_code))
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.BAD_INPUT if exc.exit_code == 2 else exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(ExitCode.OK)
