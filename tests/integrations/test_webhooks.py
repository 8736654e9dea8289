"""Webhook notifications against a real HTTP receiver on 127.0.0.1, fed by a real Rollout's history.

The rollout runs on the fakes of tests/rollout/test_machine.py (in-memory config
engine, scripted traffic, real StateStore), so every record the webhooks see
is one the state machine really wrote. Nothing here asserts a wall-clock
duration tighter than a generous bound: that a slow receiver does not hold up
a rollout is shown by order (the rollout call returns while the receiver still
holds the request), not by timing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from nginx_canary.rollout.verdict import FAIL
from nginx_canary.rollout.machine import Rollout
from nginx_canary.config.model import WEBHOOK_EVENTS, WebhookSettings
from nginx_canary.integrations.webhooks import DELIVERY_HEADER, WebhookSender, describe, public_event, why_failed
from nginx_canary.demo.nginx_harness import free_port
from tests.rollout.test_machine import T0, Env, tick_until

WAIT = 10.0  # upper bound for anything to happen; never reached when things work
JSON_KEYS = {"rollout", "event", "state", "canary_percent", "time", "message", "detail"}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (after its timeout, or on a kept-alive connection) is expected here


class Receiver:
    """A real HTTP server on 127.0.0.1 in a thread, recording every request and answering as told.

    ``statuses`` is consumed one per request, then ``status`` answers; with
    ``hang`` set, each request is held until ``release`` is set (at close at
    the latest), as a receiver that accepts and never answers.
    """

    def __init__(self, status: int = 200, hang: bool = False, headers: Optional[Dict[str, str]] = None) -> None:
        self.status = status
        self.statuses: List[int] = []
        self.hang = hang
        self.headers = headers or {}
        self.release = threading.Event()
        self.requests: List[Dict[str, Any]] = []
        self.answered = 0
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                receiver.handle(self)

            do_GET = do_POST  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self.cond:
            self.requests.append({"method": handler.command, "path": handler.path, "headers": dict(handler.headers),
                                  "body": body})
            status = self.statuses.pop(0) if self.statuses else self.status
            self.cond.notify_all()
        if self.hang:
            self.release.wait(WAIT)
        try:
            handler.send_response(status)
            for name, value in self.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:
            pass  # the client gave up (timeout) before the answer
        with self.cond:
            self.answered += 1
            self.cond.notify_all()

    def wait_for(self, count: int) -> List[Dict[str, Any]]:
        """The first ``count`` requests, once they have arrived."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, WAIT), \
                f"{len(self.requests)} requests arrived, expected {count}"
            return list(self.requests[:count])

    def payloads(self) -> List[Dict[str, Any]]:
        with self.cond:
            return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


class Sleeps:
    """The injected wait between attempts: records the delays, waits for none."""

    def __init__(self) -> None:
        self.delays: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def senders() -> Iterator[Any]:
    """Make WebhookSenders; each is closed at teardown."""
    made: List[WebhookSender] = []

    def make(hooks: List[WebhookSettings], **kwargs: Any) -> WebhookSender:
        kwargs.setdefault("sleep", Sleeps())
        made.append(WebhookSender("app", hooks, **kwargs))
        return made[-1]

    yield make
    for sender in made:
        sender.close(0.5)


def watched(env: Env, sender: WebhookSender, **changes: Any) -> Rollout:
    rollout = env.rollout(**changes)
    rollout.listeners.append(sender.listener)
    return rollout


def run_to_promotion(rollout: Rollout) -> None:
    rollout.start(T0)
    tick_until(rollout, T0 + 1, T0 + 1000, stop=lambda r: r.state.state != "progressing")
    assert rollout.state.state == "promoted"


def run_to_rollback(env: Env, rollout: Rollout) -> None:
    rollout.start(T0)
    env.traffic.mode = FAIL
    tick_until(rollout, T0 + 1, T0 + 10, stop=lambda r: r.state.state != "progressing")
    assert rollout.state.state == "rolled_back"


def warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nginx_canary.integrations.webhooks" and r.levelno >= logging.WARNING]


# --- event mapping -------------------------------------------------------------------------


def test_every_public_event_comes_from_a_real_rollout(tmp_path, receiver, senders):
    env = Env(tmp_path)
    sender = senders([WebhookSettings(url=receiver.url())])
    history: List[str] = []
    rollout = watched(env, sender)
    rollout.listeners.append(lambda event, record: history.append(event))
    rollout.start(T0)
    rollout.pause(T0 + 1)
    rollout.resume(T0 + 2)
    env.traffic.mode = FAIL
    rollout.tick(T0 + 3)
    rollout.abort(T0 + 4)
    rollout.start(T0 + 10)
    tick_until(rollout, T0 + 11, T0 + 20, stop=lambda r: r.state.state != "progressing")
    env.traffic.mode = "pass"
    rollout.start(T0 + 100)
    rollout.promote(T0 + 101, full=True)
    assert sender.flush(WAIT)
    events = [p["event"] for p in receiver.payloads()]
    assert set(events) == set(WEBHOOK_EVENTS)
    assert events == [
        "started", "step", "paused", "resumed", "check_failed", "aborted",
        "started", "step", "check_failed", "check_failed", "rolled_back",
        "started", "step", "step", "promoted",
    ]
    # What is not sent: the operator's promote request, restores, passing checks.
    assert {"promote", "restored"} <= set(history)
    assert sender.stats()[0].delivered == len(events) and sender.stats()[0].failed == 0


@pytest.mark.parametrize("event, record, expected", [
    ("start", {}, "started"),
    ("step", {}, "step"),
    ("pause", {}, "paused"),
    ("drift", {"state": "paused"}, "paused"),
    ("recovered", {"state": "paused"}, "paused"),
    ("recovered", {"state": "progressing"}, None),
    ("resume", {}, "resumed"),
    ("promote", {}, None),
    ("promoted", {}, "promoted"),
    ("rollback", {}, "rolled_back"),
    ("restored", {}, None),
    ("abort", {}, "aborted"),
    ("check", {"detail": {"verdict": {"verdict": "fail"}}}, "check_failed"),
    ("check", {"detail": {"verdict": {"verdict": "pass"}}}, None),
    ("check", {"detail": {"verdict": {"verdict": "inconclusive"}}}, None),
    ("check", {"detail": {}}, None),
    ("check", {"detail": "junk"}, None),
    ("busy", {}, None),
    ("apply_failed", {}, None),
    ("restore_failed", {}, None),
])
def test_public_event(event, record, expected):
    assert public_event(event, record) == expected


# --- payloads ------------------------------------------------------------------------------


def test_json_payloads_of_a_promoted_rollout(tmp_path, receiver, senders):
    env = Env(tmp_path)
    sender = senders([WebhookSettings(url=receiver.url("/canary?team=web"))])
    run_to_promotion(watched(env, sender))
    assert sender.flush(WAIT)
    requests_seen = receiver.wait_for(6)
    payloads = receiver.payloads()
    assert [p["event"] for p in payloads] == ["started", "step", "step", "step", "step", "promoted"]
    for request, payload in zip(requests_seen, payloads):
        assert request["method"] == "POST" and request["path"] == "/canary?team=web"
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"]["User-Agent"] == "nginx-canary"
        assert set(payload) == JSON_KEYS
        assert payload["rollout"] == "app"
        assert "\n" not in payload["message"] and payload["message"].startswith("rollout app ")
    assert len({r["headers"][DELIVERY_HEADER] for r in requests_seen}) == 6
    # The payload says what the history says.
    records = [r for r in env.store.history("app") if r["event"] in ("start", "step", "promoted")]
    assert [p["time"] for p in payloads] == [r["time"] for r in records]
    assert [p["state"] for p in payloads] == [r["state"] for r in records]
    assert [p["canary_percent"] for p in payloads] == [0, 10, 25, 50, 100, 100]
    started, first, second = payloads[:3]
    assert started["message"] == "rollout app started: steps 10, 25, 50, 100 %"
    assert started["detail"]["steps"] == ["10", "25", "50", "100"]
    assert first["message"] == "rollout app at step 1: canary from 0 % to 10 %"
    assert second["message"] == "rollout app at step 2: canary from 10 % to 25 %"
    assert second["detail"]["from_percent"] == "10" and second["detail"]["to_percent"] == "25"
    assert payloads[-1]["message"].startswith("rollout app promoted: step 4 of 4 (100 %) passed its bake time of 60 s")
    assert payloads[-1]["state"] == "promoted"


def test_json_payloads_of_a_rolled_back_rollout(tmp_path, receiver, senders):
    env = Env(tmp_path)
    sender = senders([WebhookSettings(url=receiver.url(), events=("check_failed", "rolled_back"))])
    run_to_rollback(env, watched(env, sender))
    assert sender.flush(WAIT)
    failed, again, rolled_back = receiver.payloads()
    assert [failed["event"], again["event"], rolled_back["event"]] == ["check_failed", "check_failed", "rolled_back"]
    assert failed["message"].startswith("rollout app: check failed at 10 % canary (1 of 2 before a rollback): "
                                        "2 of 5 checks failed: error_rate: canary 5xx 50 % (50 of 100) is shown "
                                        "above the 5 % limit")
    assert again["message"].startswith("rollout app: check failed at 10 % canary (2 of 2 before a rollback)")
    # The verdict travels as plain JSON, checks and figures included.
    assert failed["detail"]["verdict"]["verdict"] == "fail"
    assert {c["name"] for c in failed["detail"]["verdict"]["checks"]} >= {"error_rate", "p99_latency"}
    assert rolled_back["state"] == "rolled_back" and rolled_back["canary_percent"] == 10
    assert rolled_back["message"].startswith("rollout app rolled back from 10 % canary: 2 consecutive failed checks "
                                             "(failure_threshold 2): ")
    assert rolled_back["detail"]["snapshot_id"] == "snap-1"


def test_slack_payloads_are_one_escaped_line(tmp_path, receiver, senders):
    env = Env(tmp_path)
    sender = senders([WebhookSettings(url=receiver.url("/services/T0/B0/secret"), format="slack")])
    rollout = watched(env, sender)
    rollout.start(T0)
    rollout.pause(T0 + 1, "waiting for <QA> & sign-off\nfrom ops")
    assert sender.flush(WAIT)
    started, step, paused = receiver.payloads()
    assert started == {"text": "nginx-canary: rollout app started: steps 10, 25, 50, 100 %"}
    assert step == {"text": "nginx-canary: rollout app at step 1: canary from 0 % to 10 %"}
    assert paused == {"text": "nginx-canary: rollout app paused at 10 % canary: waiting for &lt;QA&gt; &amp; "
                              "sign-off from ops"}


def test_records_read_back_from_the_history_describe_the_same(tmp_path, senders, receiver):
    # Records from the store hold the verdict as a dict, records from the rollout as a Verdict.
    env = Env(tmp_path)
    live: List[Dict[str, Any]] = []
    rollout = env.rollout()
    rollout.listeners.append(lambda event, record: live.append(dict(record)))
    run_to_rollback(env, rollout)
    stored = env.store.history("app")
    assert [r["event"] for r in live] == [r["event"] for r in stored]
    for fresh, saved in zip(live, stored):
        public = public_event(fresh["event"], fresh)
        assert public == public_event(saved["event"], saved)
        if public is not None:
            assert describe("app", public, fresh) == describe("app", public, saved)


def test_events_filter(tmp_path, receivers, senders):
    everything, promotions, failures = receivers(), receivers(), receivers()
    env = Env(tmp_path)
    sender = senders([WebhookSettings(url=everything.url()),
                      WebhookSettings(url=promotions.url(), events=("promoted",)),
                      WebhookSettings(url=failures.url(), events=("rolled_back", "aborted"))])
    run_to_promotion(watched(env, sender))
    assert sender.flush(WAIT)
    assert [p["event"] for p in promotions.payloads()] == ["promoted"]
    assert failures.payloads() == []
    assert len(everything.payloads()) == 6


# --- a receiver that hangs, fails, or is not there ---------------------------------------------------


def test_a_hanging_receiver_never_holds_up_the_rollout(tmp_path, receivers, senders, caplog):
    hanging, healthy = receivers(hang=True), receivers()
    sleeps = Sleeps()
    sender = senders([WebhookSettings(url=hanging.url(), timeout=0.2, retries=1),
                      WebhookSettings(url=healthy.url())], sleep=sleeps)
    env = Env(tmp_path)
    rollout = watched(env, sender)
    returned: List[int] = []  # requests the hanging receiver had answered when each listener call returned

    def timed(event: str, record: Dict[str, Any]) -> None:
        started = time.monotonic()
        sender.listener(event, record)
        assert time.monotonic() - started < 0.5  # generous: queueing takes microseconds
        returned.append(hanging.answered)

    rollout.listeners[:] = [timed]
    rollout.start(T0)
    rollout.pause(T0 + 1)
    # The rollout went on while the hanging receiver held its first request.
    assert rollout.state.state == "paused"
    hanging.wait_for(1)
    assert returned == [0, 0, 0] and hanging.answered == 0
    # The other webhook is not held up by it.
    healthy.wait_for(3)
    assert [p["event"] for p in healthy.payloads()] == ["started", "step", "paused"]
    # Each notification: attempt, timeout, one retry after the backoff, timeout, dropped with one log line.
    assert sender.flush(WAIT)
    assert len(hanging.wait_for(6)) == 6
    assert hanging.answered == 0
    assert sleeps.delays == [1.0, 1.0, 1.0]
    assert [s.failed for s in sender.stats()] == [3, 0]
    assert [s.delivered for s in sender.stats()] == [0, 3]
    dropped = [m for m in warnings(caplog) if "dropped after" in m]
    assert dropped == [f"rollout app: webhook 1 (http://127.0.0.1:{hanging.port}): {event} notification dropped after 2 attempt(s): "
                       "no answer within 0.2 s" for event in ("started", "step", "paused")]


def test_a_receiver_answering_500_is_retried_with_backoff_then_dropped(tmp_path, receiver, senders, caplog):
    receiver.status = 500
    sleeps = Sleeps()
    sender = senders([WebhookSettings(url=receiver.url(), events=("started",), retries=3)], sleep=sleeps)
    watched(Env(tmp_path), sender).start(T0)
    assert sender.flush(WAIT)
    attempts = receiver.wait_for(4)
    assert len(receiver.requests) == 4
    assert sleeps.delays == [1.0, 2.0, 4.0]
    # Every attempt is the same notification: same body, same delivery id.
    assert len({r["headers"][DELIVERY_HEADER] for r in attempts}) == 1
    assert len({r["body"] for r in attempts}) == 1
    assert warnings(caplog) == [f"rollout app: webhook 1 (http://127.0.0.1:{receiver.port}): started notification "
                                "dropped after 4 attempt(s): "
                                "answered 500"]
    assert sender.stats()[0].failed == 1


def test_backoff_doubles_up_to_its_cap(receiver, senders):
    receiver.status = 503
    sleeps = Sleeps()
    sender = senders([WebhookSettings(url=receiver.url(), retries=6)], sleep=sleeps, backoff=0.5, max_backoff=4.0)
    sender.listener("start", {"time": T0, "state": "progressing", "detail": {}})
    assert sender.flush(WAIT)
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_retry_that_succeeds_delivers_once(receiver, senders, caplog):
    receiver.statuses = [500, 429, 408, 204]
    sleeps = Sleeps()
    sender = senders([WebhookSettings(url=receiver.url(), retries=3)], sleep=sleeps)
    sender.listener("abort", {"time": T0, "state": "aborted", "canary_percent": "25", "detail": {"reason": "r"}})
    assert sender.flush(WAIT)
    assert len(receiver.requests) == 4 and sleeps.delays == [1.0, 2.0, 4.0]
    assert sender.stats()[0].delivered == 1 and sender.stats()[0].failed == 0
    assert warnings(caplog) == []


@pytest.mark.parametrize("status", [301, 400, 401, 404, 410])
def test_other_answers_are_final(receiver, senders, caplog, status):
    receiver.status = status
    receiver.headers = {"Location": receiver.url("/elsewhere")}
    sleeps = Sleeps()
    sender = senders([WebhookSettings(url=receiver.url(), retries=3)], sleep=sleeps)
    sender.listener("start", {"time": T0, "state": "progressing", "detail": {}})
    assert sender.flush(WAIT)
    assert [r["path"] for r in receiver.requests] == ["/hook"]  # no retry, no redirect followed
    assert sleeps.delays == []
    assert warnings(caplog) == [f"rollout app: webhook 1 (http://127.0.0.1:{receiver.port}): started notification "
                                "dropped after 1 "
                                f"attempt(s): answered {status}"]


def test_a_receiver_that_is_not_there(senders, caplog):
    sleeps = Sleeps()
    port = free_port()
    sender = senders([WebhookSettings(url=f"http://127.0.0.1:{port}/hook", retries=2)], sleep=sleeps)
    sender.listener("start", {"time": T0, "detail": {}})
    assert sender.flush(WAIT)
    assert sleeps.delays == [1.0, 2.0]
    assert warnings(caplog) == [f"rollout app: webhook 1 (http://127.0.0.1:{port}): started notification dropped after 3 "
                                "attempt(s): cannot reach it: Connection refused"]


def test_logs_never_show_the_url_path_or_credentials(senders, caplog):
    port = free_port()
    url = f"http://user:hunter2@127.0.0.1:{port}/services/T0/B0/s3cr3t?token=abc"
    sender = senders([WebhookSettings(url=url, retries=0)])
    sender.listener("start", {"time": T0, "detail": {}})
    assert sender.flush(WAIT)
    text = " ".join(warnings(caplog))
    assert f"webhook 1 (http://127.0.0.1:{port})" in text
    for secret in ("hunter2", "s3cr3t", "abc", "services"):
        assert secret not in text


# --- the queue ------------------------------------------------------------------------------------


def test_a_full_queue_drops_the_oldest_with_a_warning(receiver, senders, caplog):
    receiver.hang = True
    sender = senders([WebhookSettings(url=receiver.url(), retries=0, timeout=5.0)], max_queue=2)

    def record(n: int) -> Dict[str, Any]:
        return {"time": T0 + n, "state": "progressing", "step": n, "canary_percent": str(n),
                "detail": {"from_percent": "0", "to_percent": str(n)}}

    sender.listener("step", record(1))
    receiver.wait_for(1)  # the delivery thread holds it: the queue is empty again
    for n in (2, 3, 4):
        sender.listener("step", record(n))
    assert sender.stats()[0].overflowed == 1 and sender.stats()[0].queued == 2
    assert warnings(caplog) == [f"rollout app: webhook 1 (http://127.0.0.1:{receiver.port}): queue full (2 waiting), "
                                "dropped the oldest "
                                "notification (step)"]
    receiver.release.set()
    assert sender.flush(WAIT)
    assert [p["canary_percent"] for p in receiver.payloads()] == [1, 3, 4]
    assert sender.stats()[0].delivered == 3


# --- robustness and shutdown --------------------------------------------------------------------


class Unserialisable:
    def __str__(self) -> str:
        return "an object"


@pytest.mark.parametrize("record", [
    {},
    {"detail": None},
    {"detail": "text", "time": "soon", "canary_percent": "n/a", "step": "x"},
    {"detail": {"verdict": "fail"}, "state": 3},
    {"detail": {"reason": Unserialisable(), "nan": float("nan"), "inf": float("-inf"), "set": {3, 1, 2},
                "nested": {"t": (1, 2), 5: [None]}}},
])
def test_odd_records_are_sent_as_plain_json(receiver, senders, record):
    sender = senders([WebhookSettings(url=receiver.url())])
    sender.listener("abort", record)
    assert sender.flush(WAIT)
    (payload,) = receiver.payloads()
    assert set(payload) == JSON_KEYS and payload["event"] == "aborted"
    if isinstance(record.get("detail"), dict) and "nan" in record["detail"]:
        assert payload["detail"] == {"reason": "an object", "nan": None, "inf": None, "set": [1, 2, 3],
                                     "nested": {"t": [1, 2], "5": [None]}}


def test_a_failing_listener_logs_one_line_and_never_raises(senders, caplog, receiver):
    sender = senders([WebhookSettings(url=receiver.url())])

    class Broken(dict):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("broken record")

    sender.listener("start", Broken())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "rollout app: webhook notification of 'start' not queued: RuntimeError: broken record"]


def test_a_sender_without_webhooks_does_nothing():
    sender = WebhookSender("app", [])
    sender.listener("start", {})
    assert sender.stats() == [] and sender.flush(0)
    sender.close(0)


def test_close_delivers_what_is_queued(receiver):
    sender = WebhookSender("app", [WebhookSettings(url=receiver.url())])
    for n in range(5):
        sender.listener("start", {"time": T0 + n, "detail": {}})
    sender.close(WAIT)
    assert len(receiver.payloads()) == 5
    assert not any(t.name.startswith("webhook-app-") and t.is_alive() for t in threading.enumerate())
    sender.listener("start", {"time": T0, "detail": {}})  # after close: ignored
    assert sender.stats()[0].queued == 0


def test_close_gives_up_on_a_hanging_receiver(receiver, caplog):
    receiver.hang = True
    sender = WebhookSender("app", [WebhookSettings(url=receiver.url(), timeout=5.0)])
    for n in range(3):
        sender.listener("start", {"time": T0 + n, "detail": {}})
    receiver.wait_for(1)
    started = time.monotonic()
    sender.close(0.2)
    assert time.monotonic() - started < 3.0  # bounded by close's timeout, not the receiver's 5 s
    assert "rollout app: 2 webhook notification(s) not delivered: stopping" in warnings(caplog)


def test_why_failed_is_short():
    try:
        requests.get(f"http://127.0.0.1:{free_port()}/", timeout=2)
    except requests.RequestException as exc:
        assert why_failed(exc) == "Connection refused"
    assert why_failed(ValueError("x")) == "ValueError"
