"""The metric families: the whole exposition text, names, HELP texts, types, labels and order, pinned."""

from __future__ import annotations

from nginx_canary.integrations.metrics import DaemonMetrics
from nginx_canary.rollout.verdict import FAIL
from tests.integrations.test_metrics import stats_of



EXPOSITION = """\
# HELP nginx_canary_upstream_requests_total Upstream attempts in the access log, by group and status class.
# TYPE nginx_canary_upstream_requests_total counter
nginx_canary_upstream_requests_total{code="2xx",group="canary",rollout="app"} 3.0
nginx_canary_upstream_requests_total{code="3xx",group="canary",rollout="app"} 0.0
nginx_canary_upstream_requests_total{code="4xx",group="canary",rollout="app"} 0.0
nginx_canary_upstream_requests_total{code="5xx",group="canary",rollout="app"} 1.0
nginx_canary_upstream_requests_total{code="other",group="canary",rollout="app"} 1.0
nginx_canary_upstream_requests_total{code="2xx",group="stable",rollout="app"} 0.0
nginx_canary_upstream_requests_total{code="3xx",group="stable",rollout="app"} 2.0
nginx_canary_upstream_requests_total{code="4xx",group="stable",rollout="app"} 0.0
nginx_canary_upstream_requests_total{code="5xx",group="stable",rollout="app"} 0.0
nginx_canary_upstream_requests_total{code="other",group="stable",rollout="app"} 0.0
# HELP nginx_canary_upstream_response_seconds Upstream response time of the attempts, by group (buckets from a sketch with 1 % relative accuracy).
# TYPE nginx_canary_upstream_response_seconds histogram
nginx_canary_upstream_response_seconds_bucket{group="canary",le="0.1",rollout="app"} 3.0
nginx_canary_upstream_response_seconds_bucket{group="canary",le="1.0",rollout="app"} 4.0
nginx_canary_upstream_response_seconds_bucket{group="canary",le="+Inf",rollout="app"} 4.0
nginx_canary_upstream_response_seconds_count{group="canary",rollout="app"} 4.0
nginx_canary_upstream_response_seconds_sum{group="canary",rollout="app"} 0.65
nginx_canary_upstream_response_seconds_bucket{group="stable",le="0.1",rollout="app"} 0.0
nginx_canary_upstream_response_seconds_bucket{group="stable",le="1.0",rollout="app"} 0.0
nginx_canary_upstream_response_seconds_bucket{group="stable",le="+Inf",rollout="app"} 2.0
nginx_canary_upstream_response_seconds_count{group="stable",rollout="app"} 2.0
nginx_canary_upstream_response_seconds_sum{group="stable",rollout="app"} 4.0
# HELP nginx_canary_canary_weight_percent The canary's share of the upstream's traffic, in percent.
# TYPE nginx_canary_canary_weight_percent gauge
nginx_canary_canary_weight_percent{rollout="app"} 12.5
# HELP nginx_canary_rollout_state 1 for the rollout's current state, 0 for the others.
# TYPE nginx_canary_rollout_state gauge
nginx_canary_rollout_state{rollout="app",state="idle"} 0.0
nginx_canary_rollout_state{rollout="app",state="progressing"} 1.0
nginx_canary_rollout_state{rollout="app",state="paused"} 0.0
nginx_canary_rollout_state{rollout="app",state="promoted"} 0.0
nginx_canary_rollout_state{rollout="app",state="rolled_back"} 0.0
nginx_canary_rollout_state{rollout="app",state="aborted"} 0.0
nginx_canary_rollout_state{rollout="app",state="failed"} 0.0
# HELP nginx_canary_rollbacks_total Automatic rollbacks of the rollout to its start snapshot.
# TYPE nginx_canary_rollbacks_total counter
nginx_canary_rollbacks_total{rollout="app"} 1.0
# HELP nginx_canary_check_failures_total Failed checks, by check.
# TYPE nginx_canary_check_failures_total counter
nginx_canary_check_failures_total{check="custom",rollout="app"} 0.0
nginx_canary_check_failures_total{check="error_rate",rollout="app"} 1.0
nginx_canary_check_failures_total{check="error_rate_increase",rollout="app"} 0.0
nginx_canary_check_failures_total{check="p50_latency_ratio",rollout="app"} 0.0
nginx_canary_check_failures_total{check="p99_latency",rollout="app"} 0.0
nginx_canary_check_failures_total{check="p99_latency_ratio",rollout="app"} 0.0
# HELP nginx_canary_reload_seconds Time from nginx's reload signal to the proof that it took effect.
# TYPE nginx_canary_reload_seconds histogram
nginx_canary_reload_seconds_bucket{le="0.5"} 1.0
nginx_canary_reload_seconds_bucket{le="+Inf"} 1.0
nginx_canary_reload_seconds_count 1.0
nginx_canary_reload_seconds_sum 0.25
# HELP nginx_canary_log_lines_total Access-log lines read, by whether they fit the format.
# TYPE nginx_canary_log_lines_total counter
nginx_canary_log_lines_total{result="parsed"} 10.0
nginx_canary_log_lines_total{result="unparsed"} 2.0
# HELP nginx_canary_start_time_seconds When the daemon started, in seconds since the epoch.
# TYPE nginx_canary_start_time_seconds gauge
nginx_canary_start_time_seconds 1.7e+09
"""


def test_the_exposition_text_names_helps_labels_and_order_are_pinned():
    # Small buckets keep the text short; names, HELP texts, types, labels and order are the defaults'.
    metrics = DaemonMetrics(latency_buckets=(0.1, 1.0), reload_buckets=(0.5,), check_names=("custom",),
                            clock=lambda: 1_700_000_000.0)
    metrics.update_rollout("app", state="progressing", canary_percent=12.5,
                           canary=stats_of((200, 0.05, 3), (503, 0.5, 1), (None, None, 1)),
                           stable=stats_of((304, 2.0, 2)))
    listen = metrics.listener("app")
    listen("rollback", {"event": "rollback", "detail": {}})
    listen("check", {"event": "check", "detail": {"verdict": {"verdict": FAIL, "checks": [
        {"name": "error_rate", "verdict": FAIL}]}}})
    metrics.observe_reload(0.25)
    metrics.set_log_lines(10, 2, source="app")
    assert metrics.render().decode() == EXPOSITION


def test_in_a_fleet_the_host_label_says_who_coordinates_and_who_reaches_etcd():
    metrics = DaemonMetrics()
    lone = metrics.render().decode()
    assert "nginx_canary_fleet_" not in lone  # a lone host has no fleet series
    metrics.set_fleet("shop", "lb-2", coordinating=True, reachable=True)
    text = metrics.render().decode()
    assert 'nginx_canary_fleet_coordinator{fleet="shop",host="lb-2"} 1.0' in text
    assert 'nginx_canary_fleet_etcd_reachable{fleet="shop",host="lb-2"} 1.0' in text
    metrics.set_fleet("shop", "lb-2", coordinating=False, reachable=False)
    text = metrics.render().decode()
    assert 'nginx_canary_fleet_coordinator{fleet="shop",host="lb-2"} 0.0' in text
    assert 'nginx_canary_fleet_etcd_reachable{fleet="shop",host="lb-2"} 0.0' in text
