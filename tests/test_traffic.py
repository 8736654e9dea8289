"""Live canary/stable figures from a real nginx's access log."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

from nginx_canary.logs.sources import named_format
from nginx_canary.nginx.conf import load_config
from nginx_canary.traffic import LogTraffic
from tests.test_applier import applier_for

SNIPPET = Path(__file__).resolve().parents[1] / "conf.d" / "nginx-canary-log-format.conf"


def test_groups_count_what_nginx_served(nginx_stopped):
    (nginx_stopped.prefix / "conf.d" / "00-canary-log.conf").write_text(
        f"include {SNIPPET};\naccess_log logs/canary.log canary;\n")
    nginx_stopped.start()
    nginx = nginx_stopped
    applier_for(nginx).apply(Fraction(25))
    config = load_config(str(nginx.conf))
    log = nginx.prefix / "logs" / "canary.log"
    with LogTraffic(config, "backend", [nginx.v2], str(log), named_format(config, "canary"), watch=False) as traffic:
        served = nginx.count_versions(200)
        seen, deadline = 0, time.monotonic() + 10
        while seen < 200 and time.monotonic() < deadline:
            seen += traffic.poll(1000.0)
            time.sleep(0.02)
        canary, stable = traffic.groups(30.0, 1000.0)
    assert (canary.requests, stable.requests) == (served.get("v2", 0), served.get("v1", 0))
    assert canary.requests + stable.requests == 200
    assert canary.errors_5xx == stable.errors_5xx == 0
    assert canary.latency.count == canary.requests
