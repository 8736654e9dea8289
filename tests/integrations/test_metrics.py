"""DaemonMetrics: every figure the main loop feeds, scraped over real HTTP and read with prometheus_client's own parser."""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nginx_canary.rollout.judge import CHECK_NAMES
from nginx_canary.rollout.verdict import FAIL, PASS
from nginx_canary.errors import NginxRejectedError, StateError
from nginx_canary.logs.window import Stats
from nginx_canary.integrations.metrics import LATENCY_BUCKETS, RELOAD_BUCKETS, DaemonMetrics
from nginx_canary.integrations.metrics_families import CODES
from nginx_canary.domain import State
from tests.rollout.test_machine import T0, Env

STATE_VALUES = [s.value for s in State]

Key = Tuple[str, FrozenSet[Tuple[str, str]]]


# --- helpers ---------------------------------------------------------------------------------------


class Scraped:
    """One scrape: ``value(name, **labels)`` of a sample, and the families' types."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: Dict[Key, float] = {}
        self.types: Dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in self.samples, f"duplicate sample {key}"
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels} in:\n{self.text}"
        return self.samples[key]

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def matching(self, name: str, **labels: str) -> Dict[FrozenSet[Tuple[str, str]], float]:
        """Every sample named ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return {lab: v for (n, lab), v in self.samples.items() if n == name and want <= lab}

    def buckets(self, name: str, **labels: str) -> Dict[str, float]:
        return {dict(lab)["le"]: v for lab, v in self.matching(name + "_bucket", **labels).items()}


def scrape(url: str) -> Scraped:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return Scraped(response.read().decode("utf-8"))


def stats_of(*entries: Tuple[Optional[int], Optional[float], int]) -> Stats:
    stats = Stats()
    for status, seconds, count in entries:
        stats.add(status, seconds, count)
    return stats


def le(bound: float) -> str:
    return repr(float(bound))


# --- traffic figures -------------------------------------------------------------------------------------


def test_request_counters_latency_histogram_weight_and_state_as_fed(metrics, served):
    # Latencies well inside the bins between bucket bounds, so every bucket count is exact.
    canary = stats_of((200, 0.003, 40), (200, 0.04, 30), (302, 0.07, 5), (404, 0.2, 4), (502, 0.0, 7),
                      (503, 1.7, 3), (None, None, 2), (101, 0.004, 1))
    stable = stats_of((200, 0.012, 400), (500, 0.3, 4), (304, 12.0, 6))
    metrics.update_rollout("app", state="progressing", canary_percent=12.5, canary=canary, stable=stable)
    got = scrape(served.url)

    assert got.types["nginx_canary_upstream_requests"] == "counter"
    assert got.types["nginx_canary_upstream_response_seconds"] == "histogram"
    want = {"canary": {"2xx": 70, "3xx": 5, "4xx": 4, "5xx": 10, "other": 3},
            "stable": {"2xx": 400, "3xx": 6, "4xx": 0, "5xx": 4, "other": 0}}
    for group, codes in want.items():
        for code, count in codes.items():
            assert got.value("nginx_canary_upstream_requests_total", rollout="app", group=group, code=code) == count
    assert sum(got.matching("nginx_canary_upstream_requests_total", group="canary").values()) == canary.requests
    assert {dict(lab)["code"] for lab in got.matching("nginx_canary_upstream_requests_total")} == set(CODES)

    exact = {"canary": [0.003] * 40 + [0.04] * 30 + [0.07] * 5 + [0.2] * 4 + [0.0] * 7 + [1.7] * 3 + [0.004],
             "stable": [0.012] * 400 + [0.3] * 4 + [12.0] * 6}
    for group, values in exact.items():
        buckets = got.buckets("nginx_canary_upstream_response_seconds", rollout="app", group=group)
        assert list(buckets) == [le(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for bound in LATENCY_BUCKETS:
            assert buckets[le(bound)] == sum(1 for v in values if v <= bound), (group, bound)
        assert buckets["+Inf"] == len(values)
        assert got.value("nginx_canary_upstream_response_seconds_count", rollout="app", group=group) == len(values)
        assert got.value("nginx_canary_upstream_response_seconds_sum", rollout="app", group=group) == \
            pytest.approx(sum(values))

    assert got.value("nginx_canary_canary_weight_percent", rollout="app") == 12.5
    states = got.matching("nginx_canary_rollout_state", rollout="app")
    assert {dict(lab)["state"]: v for lab, v in states.items()} == {s: float(s == "progressing") for s in STATE_VALUES}


def test_histogram_buckets_agree_with_the_exact_counts_within_the_sketch_accuracy(metrics, served):
    rng = random.Random(5)
    values = [round(rng.lognormvariate(-3.0, 1.5), 3) for _ in range(5000)]  # milliseconds, as nginx logs
    values += list(LATENCY_BUCKETS) * 3  # exactly on the bounds: always counted in their bucket
    canary = Stats()
    for v in values:
        canary.add(200, v)
    metrics.update_rollout("app", state="progressing", canary_percent=10, canary=canary, stable=Stats())
    buckets = scrape(served.url).buckets("nginx_canary_upstream_response_seconds", rollout="app", group="canary")
    previous = 0.0
    for bound in LATENCY_BUCKETS:
        count = buckets[le(bound)]
        # Every value <= bound, and at most those within the sketch's bin above it (< 2 % higher).
        assert sum(1 for v in values if v <= bound) <= count <= sum(1 for v in values if v < bound * 1.0203)
        assert count >= previous
        previous = count
    assert buckets["+Inf"] == len(values)


def test_state_gauge_is_one_hot_for_every_state_and_the_weight_follows(metrics, served):
    for state in STATE_VALUES:
        metrics.update_rollout("app", state=state, canary_percent="33.33", canary=Stats(), stable=Stats())
        got = scrape(served.url)
        states = {dict(lab)["state"]: v for lab, v in got.matching("nginx_canary_rollout_state", rollout="app").items()}
        assert states == {s: float(s == state) for s in STATE_VALUES}
        assert got.value("nginx_canary_canary_weight_percent", rollout="app") == 33.33


def test_counters_never_go_down_when_the_traffic_source_starts_afresh(metrics, served):
    metrics.update_rollout("app", state="progressing", canary_percent=10,
                           canary=stats_of((200, 0.02, 100), (502, 0.3, 10)), stable=stats_of((200, 0.02, 900)))
    # The daemon rebuilt the rollout's log reader (SIGHUP): its cumulative figures start at 0 again.
    metrics.update_rollout("app", state="progressing", canary_percent=10,
                           canary=stats_of((200, 0.02, 5)), stable=stats_of((200, 0.02, 50)))
    got = scrape(served.url)
    assert got.value("nginx_canary_upstream_requests_total", rollout="app", group="canary", code="2xx") == 105
    assert got.value("nginx_canary_upstream_requests_total", rollout="app", group="canary", code="5xx") == 10
    assert got.value("nginx_canary_upstream_requests_total", rollout="app", group="stable", code="2xx") == 950
    buckets = got.buckets("nginx_canary_upstream_response_seconds", rollout="app", group="canary")
    assert (buckets[le(0.025)], buckets[le(0.5)], buckets["+Inf"]) == (105, 115, 115)
    # Growing again from the new source adds to the base.
    metrics.update_rollout("app", state="progressing", canary_percent=10,
                           canary=stats_of((200, 0.02, 8)), stable=stats_of((200, 0.02, 60)))
    got = scrape(served.url)
    assert got.value("nginx_canary_upstream_requests_total", rollout="app", group="canary", code="2xx") == 108


def test_a_removed_rollout_loses_its_series_and_others_keep_theirs(metrics, served):
    for name in ("app", "api"):
        metrics.update_rollout(name, state="idle", canary_percent=0, canary=Stats(), stable=Stats())
        metrics.listener(name)
    metrics.remove_rollout("app")
    metrics.remove_rollout("never-known")
    got = scrape(served.url)
    for name in ("nginx_canary_upstream_requests_total", "nginx_canary_rollout_state", "nginx_canary_rollbacks_total",
                 "nginx_canary_check_failures_total", "nginx_canary_canary_weight_percent"):
        assert not got.matching(name, rollout="app"), name
        assert got.matching(name, rollout="api"), name


# --- counters from a real Rollout -------------------------------------------------------------------------


def check_failures_in_history(env: Env) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for record in env.store.history("app"):
        verdict = record["detail"].get("verdict") if record["event"] == "check" else None
        if verdict and verdict["verdict"] == FAIL:
            for check in verdict["checks"]:
                if check["verdict"] == FAIL:
                    counts[check["name"]] = counts.get(check["name"], 0) + 1
    return counts


def feed(metrics: DaemonMetrics, rollout) -> None:
    metrics.update_rollout(rollout.name, state=rollout.state.state, canary_percent=rollout.state.canary_percent,
                           canary=Stats(), stable=Stats())


def test_a_failing_canary_rolled_back_by_a_real_rollout_counts_its_failed_checks_and_the_rollback(
        tmp_path, metrics, served):
    env = Env(tmp_path)
    rollout = env.rollout(failure_threshold=3)
    rollout.listeners.append(metrics.listener("app"))
    got = scrape(served.url)
    # Known counters exist at 0 before anything happens, so that increase() sees the first one.
    assert got.value("nginx_canary_rollbacks_total", rollout="app") == 0
    for name in CHECK_NAMES:
        assert got.value("nginx_canary_check_failures_total", rollout="app", check=name) == 0

    rollout.start(T0)
    now = T0
    for _ in range(70):  # passing checks: recorded once a minute, never counted
        now += 1
        rollout.tick(now)
    feed(metrics, rollout)
    got = scrape(served.url)
    assert got.value("nginx_canary_rollout_state", rollout="app", state="progressing") == 1
    assert got.value("nginx_canary_canary_weight_percent", rollout="app") == 25
    assert sum(got.matching("nginx_canary_check_failures_total", rollout="app").values()) == 0

    env.traffic.mode = FAIL
    while rollout.state.state == "progressing":
        now += 1
        rollout.tick(now)
    assert rollout.state.state == "rolled_back"
    feed(metrics, rollout)
    got = scrape(served.url)
    assert got.value("nginx_canary_rollbacks_total", rollout="app") == 1
    failed = check_failures_in_history(env)
    assert failed.get("error_rate") == 3  # 50 % 5xx: three consecutive failed checks
    for name, count in failed.items():
        assert got.value("nginx_canary_check_failures_total", rollout="app", check=name) == count
    assert sum(got.matching("nginx_canary_check_failures_total", rollout="app").values()) == sum(failed.values())
    assert got.value("nginx_canary_rollout_state", rollout="app", state="rolled_back") == 1
    assert got.value("nginx_canary_rollout_state", rollout="app", state="progressing") == 0
    assert got.value("nginx_canary_canary_weight_percent", rollout="app") == 0

    # A second run whose first step nginx refuses is a rollback too; an operator's abort is not.
    env.traffic.mode = PASS
    env.applier.fail["apply"].append(NginxRejectedError("nginx -t failed"))
    with pytest.raises(NginxRejectedError):
        rollout.start(now + 10)
    assert rollout.state.state == "rolled_back"
    rollout.start(now + 100)
    rollout.abort(now + 101)
    got = scrape(served.url)
    assert got.value("nginx_canary_rollbacks_total", rollout="app") == 2
    assert [r["event"] for r in env.store.history("app")].count("rollback") == 2


def test_failed_checks_count_even_when_the_history_cannot_be_written(tmp_path, metrics, served, monkeypatch):
    env = Env(tmp_path)
    rollout = env.rollout(failure_threshold=2)
    rollout.listeners.append(metrics.listener("app"))
    rollout.start(T0)

    def broken(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        raise StateError("cannot append to history: No space left on device")

    # The listener then gets the record built in memory, which holds the Verdict object itself.
    monkeypatch.setattr(env.store, "append_history", broken)
    env.traffic.mode = FAIL
    rollout.tick(T0 + 1)
    rollout.tick(T0 + 2)
    assert rollout.state.state == "rolled_back"
    got = scrape(served.url)
    assert got.value("nginx_canary_check_failures_total", rollout="app", check="error_rate") == 2
    assert got.value("nginx_canary_rollbacks_total", rollout="app") == 1


def test_the_listener_ignores_records_it_does_not_count(metrics, served):
    listen = metrics.listener("app")
    listen("check", {"event": "check", "detail": {"verdict": {"verdict": PASS, "checks": [
        {"name": "error_rate", "verdict": FAIL}]}}})  # a passing verdict: nothing failed
    listen("check", {"event": "check", "detail": {}})
    listen("step", {"event": "step", "detail": {"verdict": {"verdict": FAIL, "checks": []}}})
    listen("abort", {"event": "abort", "detail": {}})
    listen("check", {"event": "check", "detail": {"verdict": {"verdict": FAIL, "checks": [
        {"name": "custom_check", "verdict": FAIL}, {"name": "p99_latency", "verdict": PASS}]}}})
    got = scrape(served.url)
    assert got.value("nginx_canary_rollbacks_total", rollout="app") == 0
    failures = {dict(lab)["check"]: v for lab, v in got.matching("nginx_canary_check_failures_total").items()}
    assert failures == {**{name: 0 for name in CHECK_NAMES}, "custom_check": 1}


# --- reloads and log lines ---------------------------------------------------------------------------------


def test_reload_histogram(metrics, served):
    for seconds in (0.07, 0.12, 0.12, 0.4, 3.0, 45.0):
        metrics.observe_reload(seconds)
    got = scrape(served.url)
    assert got.types["nginx_canary_reload_seconds"] == "histogram"
    buckets = got.buckets("nginx_canary_reload_seconds")
    assert list(buckets) == [le(b) for b in RELOAD_BUCKETS] + ["+Inf"]
    assert [buckets[le(b)] for b in RELOAD_BUCKETS] == [0, 1, 3, 4, 4, 4, 5, 5, 5]
    assert buckets["+Inf"] == 6 == got.value("nginx_canary_reload_seconds_count")
    assert got.value("nginx_canary_reload_seconds_sum") == pytest.approx(48.71)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            metrics.observe_reload(bad)


def test_log_lines_are_summed_over_sources_and_survive_a_source_starting_afresh(metrics, served):
    got = scrape(served.url)
    assert got.value("nginx_canary_log_lines_total", result="parsed") == 0
    assert got.value("nginx_canary_log_lines_total", result="unparsed") == 0
    metrics.set_log_lines(1000, 3, source="app")
    metrics.set_log_lines(50, 0, source="api")
    metrics.set_log_lines(1200, 4, source="app")
    metrics.set_log_lines(20, 0, source="api")  # api's reader was rebuilt
    got = scrape(served.url)
    assert got.value("nginx_canary_log_lines_total", result="parsed") == 1200 + 50 + 20
    assert got.value("nginx_canary_log_lines_total", result="unparsed") == 4
    for parsed, unparsed in ((-1, 0), (1, -1), (1.5, 0), (True, 0)):
        with pytest.raises(ValueError):
            metrics.set_log_lines(parsed, unparsed)


def test_start_time_gauge():
    metrics = DaemonMetrics(clock=lambda: 1_700_000_123.0)
    with metrics.serve("127.0.0.1:0") as server:
        assert scrape(server.url).value("nginx_canary_start_time_seconds") == 1_700_000_123.0


# --- thread safety --------------------------------------------------------------------------------------------


def test_scrapes_while_the_main_loop_updates_see_consistent_growing_figures(metrics, served):
    stop = threading.Event()
    scrapes: Dict[int, List[Scraped]] = {n: [] for n in range(3)}
    errors: List[BaseException] = []

    def scraper(n: int) -> None:
        try:
            while not stop.is_set() or not scrapes[n]:
                scrapes[n].append(scrape(served.url))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=scraper, args=(n,)) for n in scrapes]
    for thread in threads:
        thread.start()
    live = Stats()  # the main loop's own object: only copies are handed over
    listen = metrics.listener("app")
    failing = {"event": "check", "detail": {"verdict": {"verdict": FAIL, "checks": [
        {"name": "error_rate", "verdict": FAIL}]}}}
    try:
        for i in range(1, 1501):
            live.add(200, 0.003 + (i % 50) * 0.01)
            live.add(503, 0.3)
            metrics.update_rollout("app", state=STATE_VALUES[i % len(STATE_VALUES)], canary_percent=i % 101,
                                   canary=live.copy(), stable=live.copy())
            listen("check", failing)
            if i % 100 == 0:
                listen("rollback", {"event": "rollback", "detail": {}})
                metrics.observe_reload(0.1)
            metrics.set_log_lines(i, i // 10, source="app")
            if i % 300 == 0:
                # Let the scrapers catch up now and then, so that many scrapes fall amid the updates.
                done = sum(map(len, scrapes.values()))
                deadline = time.monotonic() + 10
                while sum(map(len, scrapes.values())) < done + 3 and time.monotonic() < deadline:
                    time.sleep(0.001)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors

    def figures(got: Scraped) -> Tuple[float, ...]:
        return (sum(got.matching("nginx_canary_upstream_requests_total").values()),
                sum(got.matching("nginx_canary_upstream_response_seconds_count").values()),
                sum(got.matching("nginx_canary_rollbacks_total").values()),
                sum(got.matching("nginx_canary_check_failures_total").values()),
                got.value("nginx_canary_reload_seconds_count"),
                got.value("nginx_canary_log_lines_total", result="parsed"),
                got.value("nginx_canary_log_lines_total", result="unparsed"))

    for own in scrapes.values():
        assert own
        for got in own:
            if not got.matching("nginx_canary_rollout_state"):
                continue
            assert sum(got.matching("nginx_canary_rollout_state", rollout="app").values()) == 1
            for group in ("canary", "stable"):
                # One update's figures, never half of two: 2xx and 5xx grow together.
                two, five = (got.value("nginx_canary_upstream_requests_total", rollout="app", group=group, code=c)
                             for c in ("2xx", "5xx"))
                assert two == five
                assert got.value("nginx_canary_upstream_response_seconds_count", rollout="app", group=group) == \
                    two + five
        # One scraper's successive scrapes: every counter only grows.
        for earlier, later in zip(own, own[1:]):
            assert all(a <= b for a, b in zip(figures(earlier), figures(later))), (figures(earlier), figures(later))
    seen = sorted({figures(got)[0] for own in scrapes.values() for got in own})
    assert any(0 < total < 6000 for total in seen), "no scrape ran while the figures were changing"
    final = scrape(served.url)
    assert figures(final) == (6000, 6000, 15, 1500, 15, 1500, 150)
    assert final.buckets("nginx_canary_upstream_response_seconds", rollout="app", group="canary")["+Inf"] == 3000
