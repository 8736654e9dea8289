"""What the CLI commands do: list upstreams, plan and apply a canary split, validate."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Dict, List, Optional, Sequence

from nginx_canary.domain import percent_text
from nginx_canary.errors import BadInputError
from nginx_canary.inputs import check_word
from nginx_canary.nginx.model import NginxConfig, Upstream, UpstreamServer, servers_named
from nginx_canary.nginx.edit import ServerChange, edit_servers
from nginx_canary.nginx.reading import ENCODING, Settings, read_config, read_config_file
from nginx_canary.nginx.origin import Originals, from_snapshots, origins
from nginx_canary.nginx.split import Split, compute_split, steered_stable
from nginx_canary.nginx.sticky import STICKY_TOTAL, consistent_hash_key, sticky_split
from nginx_canary.nginx.transaction import FileChange, Outcome, Transaction
from nginx_canary.statedir import StateDir


@dataclass(frozen=True)
class Plan:
    """A split worked out against the files as they are, not yet written."""

    upstream: Upstream
    canary: List[UpstreamServer]
    stable: List[UpstreamServer]
    split: Split
    changes: List[FileChange]
    diff: str
    #: The KEY of the upstream's ``hash KEY consistent``: the split is sticky (:mod:`nginx_canary.nginx.sticky`).
    sticky_key: Optional[str] = None

    def sticky_note(self) -> Optional[str]:
        """The line set-weight prints for a sticky split; None for per-request weights."""
        if self.sticky_key is None:
            return None
        return f"sticky: consistent hash on {self.sticky_key}, weights out of {STICKY_TOTAL}"


def plan_split(config: NginxConfig, upstream_name: str, canary_addresses: Sequence[str], percent: Fraction,
               context: Optional[str] = None, *, originals: Optional[Originals] = None) -> Plan:
    """Work out the edits that give ``canary_addresses`` ``percent`` of ``upstream_name``'s traffic.

    ``context`` (``http`` or ``stream``) picks between upstreams of the same
    name; without it the http one (see :meth:`NginxConfig.upstream`).
    ``originals`` tells each file's bytes before nginx-canary changed it
    (:func:`nginx_canary.nginx.origin.from_snapshots`; without it, the files as
    they are): a stable server ``down`` then stays so, and a server whose
    weight and ``down`` come back to that form gets its bytes back.

    Raises:
        BadInputError: a name or address is unsafe or unknown, or the split is impossible.
        ConfigError: the upstream is defined twice or a file cannot be edited safely.
    """
    check_word("UPSTREAM", upstream_name)
    if not canary_addresses:
        raise BadInputError("name at least one canary server with --canary ADDR")
    for address in canary_addresses:
        check_word("canary address", address)
    upstream = config.upstream(upstream_name, context)
    canary = servers_named(upstream, canary_addresses)
    stable = [s for s in upstream.servers if s not in canary and not s.backup]
    origin = origins([*canary, *stable], read_config_file, originals)
    stable = steered_stable(upstream.name, stable, [s.down and origin[s].down for s in stable], percent)
    sticky_key = consistent_hash_key(upstream)
    if sticky_key is None:
        split = compute_split([s.weight for s in canary], [s.weight for s in stable], percent,
                              origin=([origin[s].weight for s in canary], [origin[s].weight for s in stable]))
    else:
        split = sticky_split([s.weight for s in canary], [s.weight for s in stable], percent)
    by_file: Dict[str, List[ServerChange]] = {}
    for group, weights, down in (
        (canary, split.canary_weights, split.canary_down),
        (stable, split.stable_weights, split.stable_down),
    ):
        for server, weight in zip(group, weights):
            by_file.setdefault(server.file, []).append(
                ServerChange(server.line, server.address, weight, down, original=origin[server].text))
    changes: List[FileChange] = []
    diff_parts: List[str] = []
    for path, server_changes in by_file.items():
        old = read_config_file(path)
        old_text = old.decode(*ENCODING)
        new_text = edit_servers(old_text, server_changes, filename=path)
        if new_text == old_text:
            continue
        changes.append(FileChange(path, old, new_text.encode(*ENCODING)))
        diff_parts.extend(difflib.unified_diff(
            old_text.splitlines(keepends=True), new_text.splitlines(keepends=True), fromfile=path, tofile=path,
        ))
    diff = "".join(line if line.endswith("\n") else line + "\n" for line in diff_parts)
    return Plan(upstream, canary, stable, split, changes, diff, sticky_key)


@dataclass(frozen=True)
class SetWeightResult:
    """What ``set-weight`` did (or would do, on a dry run)."""

    plan: Plan
    outcome: Optional[Outcome] = None
    recovered: Optional[str] = None
    notes: List[str] = field(default_factory=list)


def set_weight(settings: Settings, upstream: str, percent: Fraction, canary: Sequence[str], *,
               dry_run: bool = False, reload: bool = True, context: Optional[str] = None) -> SetWeightResult:
    """Apply a canary split: plan, then (unless ``dry_run``) write, test, reload and verify.

    Raises:
        BadInputError, ConfigError: bad input or config (nothing changed).
        NginxNotRunningError: reload asked and nginx not running (nothing changed).
        NginxRejectedError: nginx rejected the change (files restored).
        BusyError: another writer holds the lock.
    """
    if dry_run:
        config = read_config(settings, logs=False)
        plan = plan_split(config, upstream, canary, percent, context,
                          originals=from_snapshots(settings.state_dir))
        return SetWeightResult(plan, notes=twin_notes(config, plan.upstream, context) + resting_notes(plan))
    nginx = settings.nginx()
    with StateDir(settings.state_dir).writer_lock():
        transaction = Transaction(settings.state_dir, nginx)
        recovered = transaction.recover()
        config = read_config(settings, logs=False)
        plan = plan_split(config, upstream, canary, percent, context,
                          originals=from_snapshots(settings.state_dir))
        if not plan.changes:
            if reload:
                nginx.find_master(config)
            return SetWeightResult(plan, None, recovered, twin_notes(config, plan.upstream, context)
                                   + resting_notes(plan) + ["already at this split; nothing to change"])
        about = {"command": "set-weight", "upstream": plan.upstream.name, "context": plan.upstream.context,
                 "detail": f"canary {percent_text(plan.split.canary_percent())} % ({', '.join(canary)})"}
        outcome = transaction.apply(plan.changes, config, reload=reload, about=about)
        return SetWeightResult(plan, outcome, recovered, twin_notes(config, plan.upstream, context)
                               + resting_notes(plan))


def resting_notes(plan: Plan) -> List[str]:
    """A note naming the stable servers left ``down`` because they were down before nginx-canary's changes."""
    resting = [s.address for s in plan.upstream.servers
               if s not in plan.canary and s not in plan.stable and not s.backup]
    if not resting:
        return []
    return [f"left down (down before nginx-canary changed anything; name it with --canary to give it traffic): "
            f"{', '.join(resting)}"]


def twin_notes(config: NginxConfig, upstream: Upstream, context: Optional[str]) -> List[str]:
    """A note when an upstream of the same name in another context was left alone by default."""
    others = config.other_contexts(upstream)
    if context is not None or not others:
        return []
    return [f"upstream {upstream.name!r} is also defined in {' and '.join(others)} {{}}; this is the "
            f"{upstream.context} one (--context {others[0]} for the other)"]


@dataclass(frozen=True)
class ValidateResult:
    """Findings of ``validate``."""

    config: NginxConfig
    master_pid: Optional[int]
    workers: List[int]
    plan: Optional[Plan]


def validate(settings: Settings, *, offline: bool = False, upstream: Optional[str] = None,
             percent: Optional[Fraction] = None, canary: Sequence[str] = (),
             context: Optional[str] = None) -> ValidateResult:
    """Run set-weight's checks without changing anything.

    Raises:
        ConfigError, NginxRejectedError: the config is unreadable or nginx -t fails.
        NginxNotRunningError: nginx is not running (unless ``offline``).
        BadInputError: a split was given and is not acceptable.
    """
    config = read_config(settings, logs=False)
    plan = None
    if upstream is not None:
        plan = plan_split(config, upstream, canary, percent if percent is not None else Fraction(0), context,
                          originals=from_snapshots(settings.state_dir))
    nginx = settings.nginx()
    nginx.test()
    master_pid, workers = None, []
    if not offline:
        master = nginx.find_master(config)
        master_pid, workers = master.pid, list(nginx.workers(master))
    return ValidateResult(config, master_pid, workers, plan)


def list_upstreams(settings: Settings) -> NginxConfig:
    """Parse the config for ``upstreams``.

    Raises:
        ConfigError: the config cannot be read or parsed.
    """
    return read_config(settings, logs=False)

