"""Gates and HTTP checks against real HTTP servers on 127.0.0.1.

``now`` is the caller's clock, passed in as the daemon will; the GETs are
real. Waiting is structural: ``wait_idle`` until the GETs in flight are done,
never a sleep, and timeouts are short only where a test waits for one.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any, Iterator, List

import pytest

from nginx_canary.rollout.analysis import evaluate
from nginx_canary.rollout.checks import CHECKS, Thresholds
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS
from nginx_canary.integrations.gates import (
    CLOSED,
    OPEN,
    PENDING,
    GateChecker,
    HttpChecker,
    HttpCheckResult,
    http_check_result,
)
from nginx_canary.config.model import HttpCheckSettings
from nginx_canary.integrations.urls import redact_url
from nginx_canary.demo.nginx_harness import free_port
from tests.rollout.test_machine import make_stats
from tests.integrations.test_webhooks import WAIT

T0 = 1_700_000_000.0


@pytest.fixture
def gates() -> Iterator[Any]:
    made: List[GateChecker] = []

    def make(**kwargs: Any) -> GateChecker:
        made.append(GateChecker(**kwargs))
        return made[-1]

    yield make
    for checker in made:
        checker.close(0.5)


@pytest.fixture
def http_checkers() -> Iterator[Any]:
    made: List[HttpChecker] = []

    def make(*checks: HttpCheckSettings, interval: float = 1.0) -> HttpChecker:
        made.append(HttpChecker(checks, interval))
        return made[-1]

    yield make
    for checker in made:
        checker.close(0.5)


def checked(url: str, index: int = 0) -> str:
    """How an HTTP check's reasons name the check at ``index`` of the settings, with ``url``."""
    return f"http_checks[{index}] ({redact_url(url)})"


def settled(checker: Any) -> None:
    assert checker.wait_idle(WAIT), "a GET is still in flight"


# --- gates ---------------------------------------------------------------------------------------


def test_open_gate(receivers, gates):
    server = receivers()
    checker = gates()
    url = server.url("/gate")
    first = checker.check("confirm_step", url, T0)
    assert first.state == PENDING and first.reason == f"waiting for gate confirm_step: asking {redact_url(url)}"
    settled(checker)
    status = checker.check("confirm_step", url, T0 + 0.1)
    assert status.state == OPEN
    assert status.reason == f"gate confirm_step is open: {redact_url(url)} answered 200"
    assert checker.reason("confirm_step") == status.reason
    (request,) = server.requests
    assert request["method"] == "GET" and request["path"] == "/gate"
    assert request["headers"]["User-Agent"] == "nginx-canary"


@pytest.mark.parametrize("status", [403, 404, 500, 503])
def test_closed_gate(receivers, gates, status):
    server = receivers(status=status)
    checker = gates()
    url = server.url("/gate")
    assert checker.state("confirm_promotion", url, T0) == PENDING
    settled(checker)
    assert checker.state("confirm_promotion", url, T0 + 0.1) == CLOSED
    assert checker.reason("confirm_promotion") == f"waiting for gate confirm_promotion: {redact_url(url)} answered {status}"


def test_a_redirect_does_not_open_a_gate(receivers, gates):
    server = receivers(status=302)
    server.headers = {"Location": server.url("/login")}
    checker = gates()
    checker.state("pre_rollout", server.url("/gate"), T0)
    settled(checker)
    assert checker.state("pre_rollout", server.url("/gate"), T0 + 0.1) == CLOSED
    assert checker.reason("pre_rollout").endswith("answered 302 (redirects are not followed)")
    assert [r["path"] for r in server.requests] == ["/gate"]


def test_gate_transitions_follow_the_url_polled_at_most_every_n_seconds(receivers, gates):
    server = receivers(status=403)
    checker = gates(every=5.0)
    url = server.url("/gate")
    assert checker.state("confirm_step", url, T0) == PENDING
    settled(checker)
    assert checker.state("confirm_step", url, T0 + 1) == CLOSED
    server.status = 200  # someone confirms
    assert checker.state("confirm_step", url, T0 + 4.9) == CLOSED  # not asked again yet
    assert len(server.requests) == 1
    assert checker.state("confirm_step", url, T0 + 5) == CLOSED  # asked again; the answer is not in yet
    settled(checker)
    assert len(server.requests) == 2
    assert checker.state("confirm_step", url, T0 + 5.1) == OPEN
    server.status = 409  # and takes it back
    assert checker.state("confirm_step", url, T0 + 10.1) == OPEN
    settled(checker)
    assert checker.state("confirm_step", url, T0 + 10.2) == CLOSED
    assert checker.reason("confirm_step") == f"waiting for gate confirm_step: {redact_url(url)} answered 409"
    assert len(server.requests) == 3


def test_a_hanging_gate_is_pending_then_closed_after_its_timeout(receivers, gates):
    server = receivers(hang=True)
    checker = gates(timeout=0.2)
    url = server.url("/gate")
    assert checker.state("confirm_step", url, T0) == PENDING
    server.wait_for(1)
    settled(checker)  # the GET gave up after 0.2 s of real time
    assert server.answered == 0
    assert checker.state("confirm_step", url, T0 + 0.3) == CLOSED
    assert checker.reason("confirm_step") == f"waiting for gate confirm_step: {redact_url(url)} did not answer within 0.2 s"


def test_a_gate_in_flight_longer_than_its_timeout_is_closed_at_once(receivers, gates):
    # Only the caller's clock moved: the GET (5 s of real time) is still in flight.
    server = receivers(hang=True)
    checker = gates(timeout=5.0, every=1.0)
    url = server.url("/gate")
    assert checker.state("confirm_step", url, T0) == PENDING
    server.wait_for(1)
    assert checker.state("confirm_step", url, T0 + 4) == PENDING
    assert checker.state("confirm_step", url, T0 + 5.5) == CLOSED
    assert checker.reason("confirm_step") == f"waiting for gate confirm_step: {redact_url(url)} did not answer within 5 s"
    # At most one GET per gate, however often it is asked.
    for n in range(10):
        checker.state("confirm_step", url, T0 + 6 + n)
    assert len(server.requests) == 1


def test_an_unreachable_gate_is_closed(gates):
    checker = gates()
    url = f"http://127.0.0.1:{free_port()}/gate"
    checker.state("pre_rollout", url, T0)
    settled(checker)
    assert checker.state("pre_rollout", url, T0 + 0.1) == CLOSED
    assert checker.reason("pre_rollout") == f"waiting for gate pre_rollout: {redact_url(url)} cannot be reached: Connection refused"


def test_an_old_answer_is_not_todays(receivers, gates):
    server = receivers()
    checker = gates(timeout=5.0, every=5.0)
    url = server.url("/gate")
    checker.state("confirm_step", url, T0)
    settled(checker)
    assert checker.state("confirm_step", url, T0 + 1) == OPEN
    server.status = 403
    # Asked again after a long while (the next step): the open answer from then does not count.
    assert checker.state("confirm_step", url, T0 + 300) == PENDING
    settled(checker)
    assert checker.state("confirm_step", url, T0 + 300.1) == CLOSED


def test_gates_are_independent_and_follow_a_changed_url(receivers, gates):
    yes, no = receivers(), receivers(status=403)
    checker = gates()
    checker.state("confirm_step", yes.url("/step"), T0)
    checker.state("confirm_promotion", no.url("/promotion"), T0)
    settled(checker)
    assert checker.state("confirm_step", yes.url("/step"), T0 + 0.1) == OPEN
    assert checker.state("confirm_promotion", no.url("/promotion"), T0 + 0.1) == CLOSED
    # A reload pointed the gate elsewhere: the old answer is not used for the new URL.
    assert checker.state("confirm_step", no.url("/step"), T0 + 0.2) == PENDING
    settled(checker)
    assert checker.state("confirm_step", no.url("/step"), T0 + 0.3) == CLOSED
    assert checker.reason("never_asked") is None


def test_gate_reasons_hide_credentials_and_queries(receivers, gates):
    server = receivers(status=403)
    checker = gates()
    url = f"http://ci:hunter2@127.0.0.1:{server.port}/gate?token=s3cr3t#frag"
    checker.state("confirm_promotion", url, T0)
    settled(checker)
    checker.state("confirm_promotion", url, T0 + 0.1)
    assert checker.reason("confirm_promotion") == (f"waiting for gate confirm_promotion: "
                                                   f"http://127.0.0.1:{server.port} answered 403")
    (request,) = server.requests
    assert request["path"] == "/gate?token=s3cr3t"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"ci:hunter2").decode()


def test_http_check_reasons_show_neither_path_nor_query_and_name_the_check(receivers, http_checkers):
    server = receivers(status=500)
    secret = "/hooks/T0KEN-in-path?token=T0KEN-in-query#T0KEN-in-fragment"
    checker = http_checkers(HttpCheckSettings(url=server.url("/ok")), HttpCheckSettings(url=server.url(secret)))
    checker.results(T0)
    settled(checker)
    results = checker.results(T0 + 1)
    assert [r.reason for r in results] == [f"http_checks[0] (http://127.0.0.1:{server.port}) answered 500",
                                           f"http_checks[1] (http://127.0.0.1:{server.port}) answered 500"]
    verdict = http_check_result(results, make_stats(1), make_stats(1))
    assert "T0KEN" not in repr(verdict) and "/hooks" not in repr(verdict)
    # The endpoints got the whole URLs (results at T0 + 1 may already have started the next round of probes).
    assert {r["path"] for r in server.requests} == {"/hooks/T0KEN-in-path?token=T0KEN-in-query", "/ok"}


def test_a_closed_checker_asks_nothing(receivers):
    server = receivers(hang=True)
    checker = GateChecker(timeout=5.0)
    checker.state("confirm_step", server.url(), T0)
    server.wait_for(1)
    done = threading.Event()
    threading.Thread(target=lambda: (checker.close(0.2), done.set()), daemon=True).start()
    assert done.wait(WAIT)  # close does not wait out the hanging GET
    assert checker.state("other", server.url(), T0 + 100) == PENDING
    assert len(server.requests) == 1


def test_gate_checker_arguments():
    with pytest.raises(ValueError):
        GateChecker(timeout=0)
    with pytest.raises(ValueError):
        GateChecker(every=-1)
    with pytest.raises(ValueError):
        HttpChecker([], 0)


# --- HTTP checks ----------------------------------------------------------------------------------


def test_http_check_2xx_is_ok(receivers, http_checkers):
    server = receivers(status=204)
    url = server.url("/health")
    checker = http_checkers(HttpCheckSettings(url=url))
    assert checker.results(T0) == [HttpCheckResult(url, None, f"{checked(url)}: waiting for its first answer")]
    settled(checker)
    assert checker.results(T0 + 1) == [HttpCheckResult(url, True, f"{checked(url)} answered 204")]
    settled(checker)
    assert len(server.requests) == 2  # one GET per check
    assert all(r["method"] == "GET" and r["path"] == "/health" for r in server.requests)


@pytest.mark.parametrize("status", [500, 503, 404, 301])
def test_http_check_non_2xx_fails(receivers, http_checkers, status):
    server = receivers(status=status)
    url = server.url("/health")
    checker = http_checkers(HttpCheckSettings(url=url))
    checker.results(T0)
    settled(checker)
    (result,) = checker.results(T0 + 1)
    assert result.ok is False and result.reason.startswith(f"{checked(url)} answered {status}")


def test_http_check_timeout_fails(receivers, http_checkers):
    server = receivers(hang=True)
    url = server.url("/health")
    checker = http_checkers(HttpCheckSettings(url=url, timeout=0.2))
    checker.results(T0)
    settled(checker)
    assert checker.results(T0 + 1) == [HttpCheckResult(url, False, f"{checked(url)} did not answer within 0.2 s")]


def test_http_check_unreachable_fails(http_checkers):
    url = f"http://127.0.0.1:{free_port()}/health"
    checker = http_checkers(HttpCheckSettings(url=url))
    checker.results(T0)
    settled(checker)
    assert checker.results(T0 + 1) == [HttpCheckResult(url, False, f"{checked(url)} cannot be reached: Connection refused")]


def test_http_check_overdue_fails(receivers, http_checkers):
    # The GET has been in flight for longer than its timeout plus an interval of the caller's clock.
    server = receivers(hang=True)
    url = server.url("/health")
    checker = http_checkers(HttpCheckSettings(url=url, timeout=5.0), interval=1.0)
    checker.results(T0)
    server.wait_for(1)
    assert checker.results(T0 + 6)[0].ok is None  # still within 5 s + 1 s
    assert checker.results(T0 + 6.5) == [HttpCheckResult(url, False, f"{checked(url)}: no answer within 6 s")]
    assert len(server.requests) == 1  # never a second GET while one is in flight


def test_http_check_stale_answer_fails(receivers):
    server = receivers()
    url = server.url("/health")
    checker = HttpChecker([HttpCheckSettings(url=url, timeout=2.0)], interval=1.0)
    checker.results(T0)
    settled(checker)
    assert checker.results(T0 + 1)[0].ok is True
    settled(checker)
    checker.close()  # no more GETs: the last answer (asked at T0 + 1) only ages
    assert checker.results(T0 + 5)[0].ok is True  # 4 s old: within 2 * 1 s + 2 s
    assert checker.results(T0 + 5.5) == [HttpCheckResult(url, False, f"{checked(url)}: no answer within 4 s")]


def test_an_old_answer_waits_for_a_new_one(receivers, http_checkers):
    # A new run after a long idle time: the answer from back then neither passes nor fails.
    server = receivers()
    url = server.url("/health")
    checker = http_checkers(HttpCheckSettings(url=url))
    checker.results(T0)
    settled(checker)
    server.status = 500
    assert checker.results(T0 + 3600)[0].ok is None
    settled(checker)
    assert checker.results(T0 + 3601)[0].ok is False


def test_http_checks_keep_their_order_and_are_fetched_in_parallel(receivers, http_checkers):
    slow, ok, bad = receivers(hang=True), receivers(), receivers(status=502)
    checker = http_checkers(HttpCheckSettings(url=slow.url("/a"), timeout=5.0), HttpCheckSettings(url=ok.url("/b")),
                            HttpCheckSettings(url=bad.url("/c")))
    checker.results(T0)
    ok.wait_for(1)
    bad.wait_for(1)
    slow.wait_for(1)
    # The hanging URL holds up nothing: the other two have answered.
    assert checker.wait_idle(0) is False
    with ok.cond:
        assert ok.cond.wait_for(lambda: ok.answered == 1, WAIT)
    with bad.cond:
        assert bad.cond.wait_for(lambda: bad.answered == 1, WAIT)
    # Their answers are recorded just after they are sent: look until they are.
    deadline = time.monotonic() + WAIT
    results = checker.results(T0 + 0.1)
    while (results[1].ok is None or results[2].ok is None) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
        results = checker.results(T0 + 0.1)
    assert [r.url for r in results] == [slow.url("/a"), ok.url("/b"), bad.url("/c")]
    assert [r.ok for r in results] == [None, True, False]
    slow.release.set()


# --- HTTP checks in the verdict ------------------------------------------------------------------------


def test_http_checks_enter_the_verdict(receivers, http_checkers):
    server = receivers()
    url = server.url("/health")
    checker = http_checkers(HttpCheckSettings(url=url))
    healthy, stable, thresholds = make_stats(100), make_stats(400), Thresholds()

    first = evaluate(healthy, stable, thresholds, T0, CHECKS + (checker.check(T0),))
    assert first.verdict == INCONCLUSIVE and first.reason == f"{checked(url)}: waiting for its first answer"
    settled(checker)
    passed = evaluate(healthy, stable, thresholds, T0 + 1, CHECKS + (checker.check(T0 + 1),))
    assert passed.verdict == PASS and passed.reason == "all 5 checks passed"
    http = passed.checks[-1]
    assert (http.name, http.value, http.threshold, http.reason) == ("http_checks", 0.0, 0.0, "1 of 1 URL answered 2xx")
    assert (http.canary_requests, http.stable_requests) == (100, 400)

    server.status = 503
    settled(checker)  # the GET started at T0 + 1 answered 200 already; the next one sees the 503
    checker.check(T0 + 2)
    settled(checker)
    failed = evaluate(make_stats(3), stable, thresholds, T0 + 3, CHECKS + (checker.check(T0 + 3),))
    # A failing health endpoint fails the verdict however little traffic the canary had.
    assert failed.verdict == FAIL
    assert failed.reason == f"1 of 5 checks failed: http_checks: {checked(url)} answered 503"
    assert failed.to_dict()["checks"][-1]["value"] == 1.0


def test_http_check_result_without_urls_passes():
    result = http_check_result([], make_stats(1), make_stats(1))
    assert result.verdict == PASS and result.reason == "0 of 0 URLs answered 2xx"
    checker = HttpChecker([], 1.0)
    assert checker.urls == [] and checker.results(T0) == []
    checker.close()
