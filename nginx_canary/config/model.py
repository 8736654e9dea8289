"""The daemon's configuration as frozen dataclasses: what the rest of the daemon reads.

:mod:`nginx_canary.config.settings` builds them from the YAML file and
validates every value; constructing one directly (as tests do) skips that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Literal, Mapping, Optional, Tuple

OnSuccess = Literal["keep", "restore"]

#: What a webhook can be told, in the order a rollout usually produces them.
WEBHOOK_EVENTS: Tuple[str, ...] = ("started", "step", "paused", "resumed", "promoted", "rolled_back", "aborted",
                                   "check_failed")
WebhookFormat = Literal["json", "slack"]


@dataclass(frozen=True)
class NginxSettings:
    """How to reach the nginx this daemon steers."""

    conf: str = "/etc/nginx/nginx.conf"
    binary: str = "nginx"
    prefix: Optional[str] = None


@dataclass(frozen=True)
class HttpCheckSettings:
    """A URL fetched (GET) at every check: any answer but 2xx within ``timeout`` seconds fails that check."""

    url: str
    timeout: float = 2.0


@dataclass(frozen=True)
class AnalysisSettings:
    """How the canary is judged (see rollout/judge.py); durations in seconds, rates as shares of 1.

    ``window`` is no longer used (the judge counts every request since the
    step began); it is kept so that configs that set it still load.
    """

    interval: float = 1.0
    window: Optional[float] = None
    min_requests: int = 20
    max_error_rate: float = 0.05
    error_rate_tolerance: float = 0.0
    max_error_rate_increase: float = 0.02
    max_p99_latency: float = 1.0
    max_p99_latency_ratio: float = 2.0
    max_p50_latency_ratio: float = 1.1
    risk: float = 0.01
    promotion_risk: float = 0.05
    max_step_wait: Optional[float] = None
    failure_threshold: int = 1
    http_checks: Tuple[HttpCheckSettings, ...] = ()


@dataclass(frozen=True)
class WebhookSettings:
    """Where to POST a notification of which rollout events, and how; ``timeout`` in seconds.

    ``retries`` counts the attempts after the first one.
    """

    url: str
    events: Tuple[str, ...] = WEBHOOK_EVENTS
    format: WebhookFormat = "json"
    timeout: float = 5.0
    retries: int = 3


@dataclass(frozen=True)
class GateSettings:
    """URLs that must answer 2xx before the rollout goes on; None: no gate there."""

    pre_rollout: Optional[str] = None
    confirm_step: Optional[str] = None
    confirm_promotion: Optional[str] = None


@dataclass(frozen=True)
class FleetSettings:
    """How this host joins a fleet of daemons coordinating through etcd (see nginx_canary/fleet/).

    ``etcd`` holds ``scheme://host:port`` endpoints, all of one scheme; ``ca``,
    ``cert`` and ``key`` are PEM file paths for https; ``password`` (never in a
    repr) or ``password_file`` goes with ``user``. ``on_host_lost``: ``pause``,
    ``rollback`` or ``continue`` when a host taking part loses its lease;
    ``lease_ttl``: seconds a silent daemon stays a member (and coordinator).
    """

    etcd: Tuple[str, ...]
    name: str
    host: str
    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    password_file: Optional[str] = None
    allow_plaintext: bool = False
    on_host_lost: str = "pause"
    lease_ttl: float = 5.0


DEFAULT_STEPS: Tuple[Fraction, ...] = (Fraction(10), Fraction(25), Fraction(50), Fraction(100))


@dataclass(frozen=True)
class RolloutSettings:
    """One rollout: which servers of which upstream get traffic in which steps."""

    name: str
    upstream: str
    canary: Tuple[str, ...]
    #: ``http`` or ``stream``: which block's upstream, when both have one of that name (None: http's, else stream's).
    context: Optional[str] = None
    access_log: Optional[str] = None
    log_format: Optional[str] = None
    steps: Tuple[Fraction, ...] = DEFAULT_STEPS
    step_interval: float = 60.0
    on_success: OnSuccess = "keep"
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    webhooks: Tuple[WebhookSettings, ...] = ()
    gates: GateSettings = field(default_factory=GateSettings)
    #: Require ``hash KEY consistent`` in the upstream (splits are sticky whenever it has one, asked or not).
    sticky: bool = False


@dataclass(frozen=True)
class DaemonSettings:
    """Everything the daemon reads from its config file.

    Built by :func:`parse_settings`, which validates; constructing one directly
    (as tests do) skips validation. ``rollouts`` is read-only and keeps the
    file's order. ``fleet`` is None without a ``fleet`` section.
    """

    nginx: NginxSettings = field(default_factory=NginxSettings)
    state_dir: str = "/var/lib/nginx-canary"
    control_socket: str = "/run/nginx-canary/control.sock"
    control_group: Optional[str] = None
    metrics_listen: Optional[str] = None
    allow_insecure_permissions: bool = False
    rollouts: Mapping[str, RolloutSettings] = field(default_factory=lambda: MappingProxyType({}))
    fleet: Optional[FleetSettings] = None
