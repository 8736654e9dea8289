"""Webhook notifications of rollout events: history records in, HTTP POSTs out, in the background.

One :class:`WebhookSender` per rollout. Its :meth:`WebhookSender.listener` is
a :attr:`Rollout.listeners <nginx_canary.rollout.machine.Rollout.listeners>` entry: it
maps the history event to a public event name (:func:`public_event`), keeps
the webhooks whose ``events`` include it, builds the body (JSON or Slack) and
appends it to each webhook's queue. It never touches the network, never
waits and never raises, so a broken receiver cannot hold up or crash the
rollout that called it.

Each webhook has its own queue (bounded: when full, the oldest notification
is dropped with a warning) and its own delivery thread, so a receiver that
hangs delays only its own notifications. A delivery is a POST with the
webhook's ``timeout``; 2xx is delivered. No answer, 408, 429 and 5xx are
retried ``retries`` times, waiting 1 s, 2 s, 4 s ... (at most 60 s) between
attempts; any other answer (3xx, 4xx) is final. Redirects are not followed.
A notification given up on is one warning line in the log. Every attempt of
one notification carries the same ``X-Nginx-Canary-Delivery`` id, so a
receiver can drop the duplicate that a timed-out but processed attempt causes.

Event mapping (history event -> public event):

========================================  ================
``start``                                 ``started``
``step``                                  ``step``
``pause``, ``drift``; ``recovered`` that  ``paused``
left the rollout paused
``resume``                                ``resumed``
``promoted``                              ``promoted``
``rollback`` (the decision, before the    ``rolled_back``
restore: it carries the reason)
``abort``                                 ``aborted``
``check`` with verdict ``fail``           ``check_failed``
========================================  ================

Everything else (``promote``, the operator's request that precedes ``step``
or ``promoted``; ``restored``; ``busy``; ``apply_failed``, followed by
``rollback``; ``restore_failed``; passing checks) is not sent.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import requests

from nginx_canary.rollout.record import HistoryRecord, RecordedVerdict
from nginx_canary.config.model import WebhookSettings
from nginx_canary.domain import State
from nginx_canary.integrations.urls import redact_url

log = logging.getLogger(__name__)

USER_AGENT = "nginx-canary"
DELIVERY_HEADER = "X-Nginx-Canary-Delivery"
#: Notifications waiting per webhook; more drop the oldest.
MAX_QUEUE = 100
#: First wait between attempts, doubled after each, capped at MAX_BACKOFF (seconds).
BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: Longest message; Slack shows about this much before "show more" anyway.
MAX_MESSAGE = 2000

_SIMPLE_EVENTS = {
    "start": "started",
    "step": "step",
    "pause": "paused",
    "drift": "paused",
    "log_unparsed": "paused",
    "resume": "resumed",
    "promoted": "promoted",
    "rollback": "rolled_back",
    "abort": "aborted",
}


def public_event(event: str, record: Mapping[str, Any]) -> Optional[str]:
    """The webhook event name for history ``event`` with ``record``, or None when it is not sent."""
    if event == "check":
        return "check_failed" if _verdict(record).failed else None
    if event == "recovered":
        # Recovery pauses a rollout whose files changed while the daemon was down.
        return "paused" if record.get("state") == State.PAUSED else None
    return _SIMPLE_EVENTS.get(event)


def describe(rollout: str, public: str, record: Mapping[str, Any]) -> str:
    """One line saying what happened, for ``message`` (JSON) and ``text`` (Slack)."""
    detail = _detail(record)
    percent = _text(record.get("canary_percent"), "?")
    reason = _text(detail.get("reason"), "")
    if public == "started":
        steps = detail.get("steps")
        shown = ", ".join(str(s) for s in steps) if isinstance(steps, (list, tuple)) and steps else "?"
        text = f"rollout {rollout} started: steps {shown} %"
    elif public == "step":
        step = record.get("step")
        where = f"step {step + 1}" if isinstance(step, int) and not isinstance(step, bool) else "next step"
        text = (f"rollout {rollout} at {where}: canary from {_text(detail.get('from_percent'), '?')} % to "
                f"{_text(detail.get('to_percent'), percent)} %")
    elif public == "paused":
        text = f"rollout {rollout} paused at {percent} % canary: {reason or _text(detail.get('message'), '')}"
    elif public == "resumed":
        text = f"rollout {rollout} resumed at {percent} % canary"
        if detail.get("changed_outside"):
            text += " (config files changed outside nginx-canary: the step is applied again)"
    elif public == "promoted":
        text = f"rollout {rollout} promoted: {reason or 'done'}"
    elif public == "rolled_back":
        text = f"rollout {rollout} rolled back from {percent} % canary: {reason}"
    elif public == "aborted":
        text = f"rollout {rollout} aborted at {percent} % canary: {reason}"
    elif public == "check_failed":
        text = (f"rollout {rollout}: check failed at {percent} % canary "
                f"({_text(detail.get('failure_streak'), '?')} of {_text(detail.get('failure_threshold'), '?')} "
                f"before a rollback): {_text(_verdict(record).reason, '')}")
    else:
        text = f"rollout {rollout}: {public}"
    line = " ".join(text.split()).rstrip(": ")
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 3] + "..."


def json_payload(rollout: str, public: str, record: Mapping[str, Any]) -> Dict[str, Any]:
    """The JSON body: rollout, event, state, canary_percent (a number), time, message, detail (plain JSON)."""
    return {
        "rollout": rollout,
        "event": public,
        "state": record.get("state"),
        "canary_percent": _number(record.get("canary_percent")),
        "time": _plain(record.get("time")),
        "message": describe(rollout, public, record),
        "detail": _plain(_detail(record)),
    }


def slack_payload(rollout: str, public: str, record: Mapping[str, Any]) -> Dict[str, Any]:
    """The Slack incoming-webhook body: ``{"text": one line}``, escaped as Slack asks (& < >)."""
    text = f"nginx-canary: {describe(rollout, public, record)}"
    return {"text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}


def webhook_label(index: int, url: str) -> str:
    """How logs name a webhook: its position, scheme, host and port. The rest may hold a secret (Slack's does)."""
    return f"webhook {index + 1} ({redact_url(url)})"


@dataclass(frozen=True)
class Notification:
    """One queued POST: the public event, its body and the id shared by all its attempts."""

    event: str
    body: bytes
    delivery_id: str


@dataclass(frozen=True)
class ChannelStats:
    """A webhook's counters since the sender was made: delivered, given up, dropped because the queue was full."""

    delivered: int
    failed: int
    overflowed: int
    queued: int


class WebhookSender:
    """The webhooks of one rollout: :meth:`listener` queues, one thread per webhook delivers.

    ``session_factory`` makes each delivery thread's own ``requests.Session``;
    ``sleep(seconds)`` waits between attempts (by default an interruptible wait
    that :meth:`close` cuts short). Threads start at construction and run
    until :meth:`close`.
    """

    def __init__(self, rollout: str, webhooks: Sequence[WebhookSettings], *,
                 session_factory: Callable[[], requests.Session] = requests.Session,
                 sleep: Optional[Callable[[float], None]] = None, max_queue: int = MAX_QUEUE,
                 backoff: float = BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        """Raises ValueError for a ``max_queue`` below 1 or a negative backoff."""
        if max_queue < 1 or backoff < 0 or max_backoff < 0:
            raise ValueError("max_queue must be at least 1 and the backoffs at least 0")
        self.rollout = rollout
        self._stop = threading.Event()
        self._closing = False
        self._channels = [_Channel(self, index, hook, session_factory, sleep, max_queue, backoff, max_backoff)
                          for index, hook in enumerate(webhooks)]
        for channel in self._channels:
            channel.thread.start()

    def listener(self, event: str, record: Mapping[str, Any]) -> None:
        """Queue the notification of history ``event`` for every webhook that wants it. Never raises or blocks."""
        try:
            if self._closing or not self._channels:
                return
            public = public_event(event, record)
            if public is None:
                return
            bodies: Dict[str, bytes] = {}
            for channel in self._channels:
                if public not in channel.settings.events:
                    continue
                kind = channel.settings.format
                if kind not in bodies:
                    payload = (slack_payload if kind == "slack" else json_payload)(self.rollout, public, record)
                    bodies[kind] = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
                channel.put(Notification(public, bodies[kind], uuid.uuid4().hex))
        except Exception as exc:  # noqa: BLE001 - a notification must never break a rollout
            log.error("rollout %s: webhook notification of %r not queued: %s: %s", self.rollout, event,
                      type(exc).__name__, exc)

    def stats(self) -> List[ChannelStats]:
        """Each webhook's counters, in the order of the settings."""
        return [channel.stats() for channel in self._channels]

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queue is empty and no delivery runs; True if so."""
        deadline = time.monotonic() + timeout
        return all(channel.wait_idle(deadline) for channel in self._channels)

    def close(self, timeout: float = 2.0) -> None:
        """Stop taking notifications, deliver what is queued for up to ``timeout`` seconds, then stop.

        Notifications still queued then are dropped with one warning; a POST in
        flight is left to its own timeout on a daemon thread. Never raises.
        """
        self._closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        self.flush(max(0.0, timeout))
        self._stop.set()
        for channel in self._channels:
            channel.wake()
        for channel in self._channels:
            channel.thread.join(max(0.0, deadline - time.monotonic()))
        left = sum(channel.stats().queued for channel in self._channels)
        if left:
            log.warning("rollout %s: %d webhook notification(s) not delivered: stopping", self.rollout, left)


class _Channel:
    """One webhook: its queue, its delivery thread and its counters."""

    def __init__(self, owner: WebhookSender, index: int, settings: WebhookSettings,
                 session_factory: Callable[[], requests.Session], sleep: Optional[Callable[[float], None]],
                 max_queue: int, backoff: float, max_backoff: float) -> None:
        self.owner = owner
        self.settings = settings
        self.label = webhook_label(index, settings.url)
        self.session_factory = session_factory
        self.sleep = sleep
        self.max_queue = max_queue
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.queue: Deque[Notification] = deque()
        self.cond = threading.Condition()
        self.busy = False
        self.delivered = self.failed = self.overflowed = 0
        self.thread = threading.Thread(target=self.run, name=f"webhook-{owner.rollout}-{index + 1}", daemon=True)

    def put(self, item: Notification) -> None:
        with self.cond:
            if len(self.queue) >= self.max_queue:
                dropped = self.queue.popleft()
                self.overflowed += 1
                log.warning("rollout %s: %s: queue full (%d waiting), dropped the oldest notification (%s)",
                            self.owner.rollout, self.label, self.max_queue, dropped.event)
            self.queue.append(item)
            self.cond.notify_all()

    def stats(self) -> ChannelStats:
        with self.cond:
            return ChannelStats(self.delivered, self.failed, self.overflowed, len(self.queue))

    def wait_idle(self, deadline: float) -> bool:
        with self.cond:
            while self.queue or self.busy:
                left = deadline - time.monotonic()
                if left <= 0 or self.owner._stop.is_set():
                    return False
                self.cond.wait(left)
            return True

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def run(self) -> None:
        session = self.session_factory()
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.owner._stop.is_set():
                        self.cond.wait()
                    if self.owner._stop.is_set():
                        return
                    item = self.queue.popleft()
                    self.busy = True
                try:
                    self.deliver(session, item)
                except Exception as exc:  # noqa: BLE001 - one bad notification must not end the thread
                    log.error("rollout %s: %s: %s notification failed: %s: %s", self.owner.rollout, self.label,
                              item.event, type(exc).__name__, exc)
                finally:
                    with self.cond:
                        self.busy = False
                        self.cond.notify_all()
        finally:
            session.close()

    def deliver(self, session: requests.Session, item: Notification) -> None:
        attempts = 1 + self.settings.retries
        problem = ""
        for attempt in range(1, attempts + 1):
            problem, retry = self.post(session, item)
            if not problem:
                with self.cond:
                    self.delivered += 1
                log.debug("rollout %s: %s: %s delivered (attempt %d)", self.owner.rollout, self.label, item.event,
                          attempt)
                return
            if not retry or attempt == attempts:
                break
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            log.debug("rollout %s: %s: %s attempt %d: %s; retrying in %g s", self.owner.rollout, self.label,
                      item.event, attempt, problem, delay)
            if self.wait(delay):
                break
        with self.cond:
            self.failed += 1
        log.warning("rollout %s: %s: %s notification dropped after %d attempt(s): %s", self.owner.rollout,
                    self.label, item.event, attempt, problem)

    def post(self, session: requests.Session, item: Notification) -> Tuple[str, bool]:
        """``("", False)`` when delivered, else ``(what went wrong, whether to retry)``."""
        timeout = self.settings.timeout
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, DELIVERY_HEADER: item.delivery_id}
        try:
            response = session.post(self.settings.url, data=item.body, headers=headers, timeout=timeout,
                                    allow_redirects=False, stream=True)
        except requests.Timeout:
            return f"no answer within {timeout:g} s", True
        except requests.RequestException as exc:
            return f"cannot reach it: {why_failed(exc)}", True
        with response:
            status = response.status_code
        if 200 <= status < 300:
            return "", False
        return f"answered {status}", status in (408, 429) or status >= 500

    def wait(self, delay: float) -> bool:
        """Wait ``delay`` seconds between attempts; True when the sender is stopping."""
        if self.sleep is not None:
            self.sleep(delay)
            return self.owner._stop.is_set()
        return self.owner._stop.wait(delay)


def why_failed(exc: BaseException) -> str:
    """The short cause of a requests error (``Connection refused``), not its nested repr.

    The first OS-level message found in the chain of causes and arguments; else the exception's class name.
    """
    todo: List[BaseException] = [exc]
    seen = set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.strerror, str) and current.strerror:
            return " ".join(current.strerror.split())
        linked = (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args)
        todo.extend(link for link in linked if isinstance(link, BaseException))
    return type(exc).__name__


def _detail(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return HistoryRecord.from_data(record).detail


def _verdict(record: Mapping[str, Any]) -> RecordedVerdict:
    return HistoryRecord.from_data(record).verdict


def _text(value: Any, default: str) -> str:
    return default if value is None or value == "" else str(value)


def _number(value: Any) -> Any:
    """A percent as JSON: ``"25"`` -> 25, ``"12.5"`` -> 12.5; None and anything unreadable stay as they are."""
    if isinstance(value, str):
        try:
            fraction = Fraction(value)
        except (ValueError, ZeroDivisionError):
            return value
        return fraction.numerator if fraction.denominator == 1 else float(fraction)
    return _plain(value)


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data: non-finite floats as None, anything else not JSON as a string."""
    if depth > 20:
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_plain(v, depth + 1) for v in items]
    if isinstance(value, Fraction):
        return _number(str(value)) if value.denominator == 1 else float(value)
    return str(value)
