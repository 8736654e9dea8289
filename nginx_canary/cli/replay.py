"""``nginx-canary replay``: a rollout's verdict timeline over recorded access logs (rollout/replay.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional, Sequence

import click

from nginx_canary.cli.context import CliContext
from nginx_canary.errors import BadInputError, UnknownRolloutError

if TYPE_CHECKING:
    from nginx_canary.config.model import RolloutSettings
    from nginx_canary.logs.format import FormatSpec
    from nginx_canary.nginx.model import NginxConfig
    from nginx_canary.nginx.reading import Settings
    from nginx_canary.rollout.replay import ReplayEvent

REPLAY_EXIT_CODES_HELP = """\b
Exit codes:
  0  ok (whatever the replayed rollout's outcome)
  2  bad usage or bad input: no such rollout, a log that cannot be read, a format without a time
"""


@click.command(epilog=REPLAY_EXIT_CODES_HELP)
@click.argument("logfiles", nargs=-1, required=True, metavar="LOGFILE...")
@click.option("--rollout", "name", required=True, metavar="NAME", help="The rollout of the daemon's config to replay.")
@click.option("--speed", type=float, metavar="N", help="Play N times real time (log time drives the clock).")
@click.option("--instant", is_flag=True, help="Play as fast as possible (the default).")
@click.option("--format", "format_name", metavar="NAME",
              help="A log_format of the nginx config [default: the rollout's log_format, else the format of the "
                   "access_log writing LOGFILE, else that of the rollout's own log].")
@click.option("--log-format", metavar="STRING", help="The log format itself, as in a log_format directive.")
@click.option("--escape", type=click.Choice(["default", "json", "none"]), default="default", show_default=True,
              help="escape= of --log-format.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, then a summary object.")
@click.pass_obj
def replay(obj: CliContext, logfiles: Sequence[str], name: str, speed: Optional[float], instant: bool,
           format_name: Optional[str], log_format: Optional[str], escape: str, as_json: bool) -> None:
    """Run rollout NAME's analysis over recorded access logs as if they were live; print the verdict timeline.

    The log's timestamps drive the clock ($msec, else $time_iso8601 or
    $time_local): the run starts at the first request and the checks are
    judged every analysis.interval of log time. Steps are taken at the
    times the rollout would have taken them, but the traffic split is the
    one recorded: a log cannot show what a weight change would have done.
    No nginx is touched and nothing is written. Gates are treated as open
    and http_checks are not run.
    """
    if speed is not None and instant:
        raise click.UsageError("give --speed or --instant, not both")
    if format_name is not None and log_format is not None:
        raise click.UsageError("give --format or --log-format, not both")
    # Imported here so that other commands do not pay for the rollout machinery at start-up.
    from nginx_canary.daemon.runtime import check_rollout_against_config
    from nginx_canary.logs.format import FormatSpec
    from nginx_canary.nginx.reading import read_config
    from nginx_canary.rollout.replay import replay as run_replay

    daemon = obj.daemon_settings(required=True)
    assert daemon is not None
    rollout = daemon.rollouts.get(name)
    if rollout is None:
        known = ", ".join(sorted(daemon.rollouts)) or "none"
        raise UnknownRolloutError(f"no rollout {name!r} in {obj.config_path} (rollouts: {known})")
    settings = obj.settings
    config = read_config(settings, save_cache=False)
    check_rollout_against_config(rollout, config)
    if log_format is not None:
        spec = FormatSpec("--log-format", log_format, escape)
    else:
        spec = _format(settings, config, rollout, logfiles[0], format_name)

    def emit(event: "ReplayEvent") -> None:
        click.echo(json.dumps(event.to_dict(), sort_keys=True) if as_json else event.line())

    result = run_replay(rollout, config, spec, logfiles, speed=speed, emit=emit)
    for warning in result.warnings:
        click.echo(f"nginx-canary: warning: {warning}", err=True)
    click.echo(json.dumps(result.to_dict(), sort_keys=True) if as_json else result.line())


def _format(settings: "Settings", config: "NginxConfig", rollout: "RolloutSettings", logfile: str,
            format_name: Optional[str]) -> "FormatSpec":
    """The format named, else the rollout's, else the one writing ``logfile``, else that of the rollout's live log.

    Raises BadInputError naming the options when none fits.
    """
    from nginx_canary.logs.sources import format_for_file, log_for_upstream, named_format

    chosen = format_name or rollout.log_format
    if chosen:
        return named_format(config, chosen)
    nginx = settings.nginx()
    try:
        return format_for_file(config, nginx, logfile)
    except BadInputError:
        pass
    try:
        live = rollout.access_log or log_for_upstream(config, nginx, rollout.upstream)
        return format_for_file(config, nginx, live)
    except BadInputError as exc:
        raise BadInputError(f"cannot tell the format of {logfile} ({exc}); name it with --format NAME or "
                            "--log-format STRING") from exc
