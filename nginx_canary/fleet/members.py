"""Who is in the fleet: each daemon's membership record, and whether its rollout settings match the fleet's.

Every live daemon keeps ``members/HOST`` under its lease: the rollouts it has
configured, each with the settings that must be the same on every host
(upstream, canary servers, steps, bake time, on_success, analysis) and
their digest. Host-local settings (the access log's path and format,
webhooks, gates) may differ. A host whose settings differ from those a run
was started with does not take part in it, and says which settings differ.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Dict, List, Mapping

from nginx_canary.config.model import RolloutSettings
from nginx_canary.errors import FleetError
from nginx_canary.fleet.plan import FORMAT, is_format

#: The rollout settings every host of a fleet must share.
SHARED = ("upstream", "canary", "steps", "step_interval", "on_success", "analysis")


def shared_settings(settings: RolloutSettings) -> Dict[str, Any]:
    """The settings every host must share, as JSON-ready data (fractions as text)."""
    data = asdict(settings)
    shared = {name: data[name] for name in SHARED}
    shared["steps"] = [str(s) for s in settings.steps]
    shared["canary"] = list(settings.canary)
    return json.loads(json.dumps(shared, default=str, sort_keys=True))


def digest(shared: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> List[str]:
    """``name: ours vs theirs`` for every shared setting that differs (nested: ``analysis.risk``)."""
    found: List[str] = []
    for name in sorted(set(ours) | set(theirs)):
        a, b = ours.get(name), theirs.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            found += [f"{name}.{d}" for d in differences(a, b)]
        elif a != b:
            found.append(f"{name}: {json.dumps(a)} here, {json.dumps(b)} in the fleet")
    return found


def member_record(host: str, rollouts: Mapping[str, RolloutSettings]) -> bytes:
    shared = {name: shared_settings(s) for name, s in rollouts.items()}
    return json.dumps({"format": FORMAT, "host": host,
                       "rollouts": {name: {"digest": digest(v), "settings": v} for name, v in shared.items()}},
                      sort_keys=True).encode("utf-8")


def read_member(raw: bytes, key: str) -> Dict[str, Dict[str, Any]]:
    """``{rollout: {"digest": ..., "settings": {...}}}`` of a member record. Raises FleetError naming ``key``."""
    try:
        data = json.loads(raw.decode("utf-8"))
        rollouts = data["rollouts"]
        if not is_format(data.get("format")) or not isinstance(rollouts, dict):
            raise ValueError("format or rollouts")
        for value in rollouts.values():
            if not isinstance(value.get("digest"), str) or not isinstance(value.get("settings"), dict):
                raise ValueError("digest or settings")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FleetError(f"etcd key {key}: not a member record ({exc})") from None
    return rollouts
