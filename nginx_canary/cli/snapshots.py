"""``nginx-canary snapshots list | restore ID``: the way back by hand to a config as it was before a change."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import click

from nginx_canary.cli.context import CliContext
from nginx_canary.errors import BadInputError
from nginx_canary.nginx.snapshots import SnapshotInfo, find_snapshot, list_snapshots
from nginx_canary.statedir import StateDir
from nginx_canary.text import printable, printable_lines


def _when(created: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))


def _made_by(info: SnapshotInfo) -> str:
    """What made it, in words: the command, and for which upstream."""
    command = info.command or ("rollout" if info.kind == "rollout" else "-")
    upstream = info.upstream or "-"
    if info.upstream and info.context and info.context != "http":
        upstream += f" ({info.context})"
    detail = f": {info.detail}" if info.detail else ""
    return f"{command} {upstream}{detail}"


def _info_dict(info: SnapshotInfo) -> Dict[str, Any]:
    return {"id": info.id, "kind": info.kind, "created": info.created, "command": info.command,
            "upstream": info.upstream, "context": info.context, "detail": info.detail,
            "files": [entry.path for entry in info.files]}


@click.group("snapshots")
def snapshots() -> None:
    """List the config snapshots nginx-canary took, and restore one.

    Every change (set-weight, a rollout's steps and restores, a snapshot
    restore) first copies the files it changes to STATE_DIR/snapshots/ID (the
    last 20 are kept); a rollout's start copies its upstream's files to
    STATE_DIR/rollout-snapshots/ID. A snapshot holds the files as they were
    before the change that made it.
    """


@snapshots.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_command(obj: CliContext, as_json: bool) -> None:
    """Every snapshot, oldest first: id, when (UTC), what made it, its files."""
    found, problems = list_snapshots(obj.settings.state_dir)
    for problem in problems:
        click.echo(f"nginx-canary: warning: {printable(problem)}", err=True)
    if as_json:
        click.echo(json.dumps({"snapshots": [_info_dict(info) for info in found]}, indent=2))
        return
    if not found:
        click.echo(f"no snapshots in {obj.settings.state_dir}")
        return
    for info in found:
        click.echo(printable(f"{info.id:<28} {_when(info.created)}  {info.kind:<8} {_made_by(info)}"))
        for entry in info.files:
            click.echo(printable(f"    {entry.path}"))


def _refuse_under_rollout(obj: CliContext, snapshot_id: str) -> None:
    """Refuse a restore that would change an upstream a rollout steers (or still owes a restore).

    Raises BadInputError naming the rollout and the way out.
    """
    settings = obj.settings
    if not os.path.isdir(StateDir(settings.state_dir).rollouts):
        return
    from nginx_canary.cli.rollout import rollouts_steering
    from nginx_canary.nginx.reading import read_config
    from nginx_canary.nginx.snapshot_restore import upstreams_in

    info = find_snapshot(settings.state_dir, snapshot_id)
    for upstream in upstreams_in(read_config(settings, logs=False), info):
        for state in rollouts_steering(settings.state_dir, upstream):
            raise BadInputError(
                f"snapshot {snapshot_id} holds files of upstream {upstream!r}, which rollout {state.name!r} is "
                f"steering ({state.state} at {state.canary_percent} %); nothing restored: `nginx-canary abort "
                f"{state.name}` puts back its start snapshot, or wait until it ends")


@snapshots.command("restore")
@click.argument("snapshot_id", metavar="ID")
@click.option("--dry-run", is_flag=True, help="Show the diff that would be applied; touch nothing.")
@click.option("--no-reload", is_flag=True, help="Write and nginx -t, but do not reload nginx.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def restore_command(obj: CliContext, snapshot_id: str, dry_run: bool, no_reload: bool, as_json: bool) -> None:
    """Put back the files of snapshot ID byte for byte, through the same transaction as set-weight.

    Only files that differ from the snapshot are written; nginx -t runs,
    nginx is reloaded and the reload verified; on any failure every file is
    put back as it was. The restore is snapshotted too, so it can be undone.
    Refused while a rollout steers an upstream of those files.
    """
    from nginx_canary.nginx.snapshot_restore import restore_snapshot

    if not dry_run:
        _refuse_under_rollout(obj, snapshot_id)
    result = restore_snapshot(obj.settings, snapshot_id, dry_run=dry_run, reload=not no_reload)
    plan = result.plan
    reload = result.outcome.reload if result.outcome else None
    if as_json:
        click.echo(json.dumps({
            "snapshot": _info_dict(plan.snapshot), "dry_run": dry_run,
            "changed_files": [c.path for c in plan.changes], "diff": plan.diff,
            "new_snapshot": result.outcome.snapshot_id if result.outcome else None,
            "reload": None if reload is None else {
                "master_pid": reload.master_pid, "old_workers": list(reload.old_workers),
                "new_workers": list(reload.new_workers), "milliseconds": round(reload.seconds * 1000, 1)},
            "notes": ([result.recovered] if result.recovered else []) + result.notes,
        }, indent=2))
        return
    if result.recovered:
        click.echo(printable(result.recovered), err=True)
    click.echo(printable_lines(plan.diff), nl=False)
    for note in result.notes:
        click.echo(printable(note))
    files = f"{len(plan.changes)} file(s)"
    if dry_run:
        click.echo(f"dry run: would restore {files} of snapshot {plan.snapshot.id}; nothing changed")
    elif result.outcome is not None:
        undo = f"undo: nginx-canary snapshots restore {result.outcome.snapshot_id}"
        if reload is None:
            click.echo(f"restored {files} of snapshot {plan.snapshot.id}, tested (nginx -t ok); not reloaded; {undo}")
        else:
            click.echo(f"reloaded: restored {files} of snapshot {plan.snapshot.id}; master {reload.master_pid}, "
                       f"workers {_pids(reload.old_workers)} -> {_pids(reload.new_workers)}, "
                       f"{reload.seconds * 1000:.0f} ms; {undo}")


def _pids(pids: Optional[Any]) -> str:
    return ",".join(str(p) for p in pids or ()) or "-"
