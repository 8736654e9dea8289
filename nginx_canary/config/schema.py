"""The keys each level of the config may hold, and where a key found at the wrong level belongs."""

from __future__ import annotations

from typing import Dict, List

TOP_KEYS = ("nginx", "state_dir", "control_socket", "control_group", "metrics_listen", "allow_insecure_permissions",
            "rollouts", "fleet")
NGINX_KEYS = ("conf", "binary", "prefix")
ROLLOUT_KEYS = ("upstream", "context", "canary", "access_log", "log_format", "steps", "step_interval", "on_success", "analysis",
                "webhooks", "gates", "sticky")
ANALYSIS_KEYS = ("interval", "window", "min_requests", "max_error_rate", "error_rate_tolerance",
                 "max_error_rate_increase", "max_p99_latency", "max_p99_latency_ratio", "max_p50_latency_ratio",
                 "risk", "promotion_risk", "max_step_wait", "failure_threshold", "http_checks")
WEBHOOK_KEYS = ("url", "events", "format", "timeout", "retries")
GATE_KEYS = ("pre_rollout", "confirm_step", "confirm_promotion")
HTTP_CHECK_KEYS = ("url", "timeout")
FLEET_KEYS = ("etcd", "name", "host", "ca", "cert", "key", "user", "password", "password_file", "allow_plaintext",
              "on_host_lost", "lease_ttl")


def _where_keys_belong() -> Dict[str, str]:
    """Where a key found at the wrong level belongs, for a pointed hint (some keys live in two places)."""
    places: Dict[str, List[str]] = {}
    for keys, where in ((TOP_KEYS, "the top level"), (NGINX_KEYS, "nginx"), (ROLLOUT_KEYS, "rollouts.NAME"),
                        (ANALYSIS_KEYS, "rollouts.NAME.analysis"), (WEBHOOK_KEYS, "rollouts.NAME.webhooks[N]"),
                        (GATE_KEYS, "rollouts.NAME.gates"),
                        (HTTP_CHECK_KEYS, "rollouts.NAME.analysis.http_checks[N]"), (FLEET_KEYS, "fleet")):
        for key in keys:
            if key == "name" and where == "fleet":
                # A stray `name:` is far likelier a rollout's name, which is its key.
                continue
            places.setdefault(key, []).append(where)
    return {key: " or ".join(where) for key, where in places.items()}


#: Key name to the level(s) it belongs at, as a hint reads them (``rollouts.NAME.analysis``).
BELONGS = _where_keys_belong()
