"""Gates and HTTP checks: URLs polled in the background, asked without ever waiting for them.

:class:`GateChecker` answers "may the rollout go on?" for the gates of
``rollouts.NAME.gates`` (``pre_rollout``, ``confirm_step``,
``confirm_promotion``). :class:`HttpChecker` fetches
``analysis.http_checks`` at every check and turns the answers into one more
analysis check (:meth:`HttpChecker.check`).

Both run each GET on a thread of its own, at most one per URL at a time, and
return at once with the latest answer; the caller passes ``now`` (seconds,
from the same clock on every call, like the rollout's methods) and keeps
calling. A 2xx answer is good; anything else is not: another status (3xx
included: redirects are not followed, so a login page behind a redirect
cannot open a gate), no answer within the timeout, a connection or TLS
error. Only the status line is read, never the body. Messages show a URL
as :func:`~nginx_canary.integrations.urls.redact_url` gives it (scheme, host and port):
its path, query and ``user:password@`` may hold a secret. An HTTP check is
also named by its place in the settings (``http_checks[0]``), since two of
them may share a host.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import requests

from nginx_canary.rollout.checks import Check, Thresholds
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult
from nginx_canary.logs.window import Stats
from nginx_canary.config.model import HttpCheckSettings
from nginx_canary.integrations.urls import redact_url
from nginx_canary.integrations.webhooks import USER_AGENT, why_failed

OPEN = "open"
CLOSED = "closed"
PENDING = "pending"
#: Default seconds a gate URL has to answer, and between two polls of one gate.
GATE_TIMEOUT = 5.0
GATE_EVERY = 5.0
HTTP_CHECK_NAME = "http_checks"


@dataclass(frozen=True)
class Answer:
    """What one GET came back with: ``ok`` for 2xx; ``status`` None when there was no answer."""

    ok: bool
    status: Optional[int]
    text: str  # "answered 403", "did not answer within 5 s", "cannot be reached: Connection refused"
    asked_at: float  # the caller's ``now`` when the GET started


def fetch(session: requests.Session, url: str, timeout: float, asked_at: float) -> Answer:
    """GET ``url`` once: the status only, no redirects followed. Never raises for a network problem."""
    try:
        response = session.get(url, timeout=timeout, allow_redirects=False, stream=True,
                               headers={"User-Agent": USER_AGENT})
    except requests.Timeout:
        return Answer(False, None, f"did not answer within {timeout:g} s", asked_at)
    except requests.RequestException as exc:
        return Answer(False, None, f"cannot be reached: {why_failed(exc)}", asked_at)
    with response:
        status = response.status_code
    text = f"answered {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    return Answer(200 <= status < 300, status, text, asked_at)


class _Probe:
    """One URL: its session, the GET in flight (at most one) and its latest answer. Guarded by the poller's lock."""

    def __init__(self, url: str, timeout: float, label: str = "") -> None:
        self.url = url
        self.shown = f"{label} ({redact_url(url)})" if label else redact_url(url)
        self.timeout = timeout
        self.session: Optional[requests.Session] = None
        self.thread: Optional[threading.Thread] = None
        self.asked_at: Optional[float] = None  # when the latest GET started
        self.answer: Optional[Answer] = None

    @property
    def in_flight(self) -> bool:
        return self.thread is not None


class _Poller:
    """Runs each probe's GET on a thread of its own; shared by the gate and HTTP checkers."""

    def __init__(self, session_factory: Callable[[], requests.Session], name: str) -> None:
        self._session_factory = session_factory
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._probes: List[_Probe] = []  # every probe ever started, for close()

    def _start(self, probe: _Probe, now: float) -> None:
        """Start a GET of ``probe`` (the lock is held)."""
        if self._closed:
            return
        if probe.session is None:
            # One session per URL, used by one GET at a time: requests.Session is not thread-safe.
            probe.session = self._session_factory()
            self._probes.append(probe)
        probe.asked_at = now
        probe.thread = threading.Thread(target=self._run, args=(probe, now), daemon=True,
                                        name=f"{self._name} {probe.shown}"[:60])
        probe.thread.start()

    def _run(self, probe: _Probe, asked_at: float) -> None:
        assert probe.session is not None
        try:
            answer = fetch(probe.session, probe.url, probe.timeout, asked_at)
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave the probe in flight forever
            # Only the class: an exception's text may quote the URL.
            answer = Answer(False, None, f"failed: {type(exc).__name__}", asked_at)
        with self._lock:
            probe.answer = answer
            probe.thread = None
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no GET is in flight; True if none is."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(p.in_flight for p in self._probes):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def close(self, timeout: float = 1.0) -> None:
        """Start no more GETs, give those in flight up to ``timeout`` seconds, close the sessions. Never raises."""
        with self._lock:
            self._closed = True
        self.wait_idle(timeout)
        with self._lock:
            for probe in self._probes:
                # A GET still in flight keeps its session; its daemon thread ends at its timeout.
                if probe.session is not None and not probe.in_flight:
                    probe.session.close()


@dataclass(frozen=True)
class GateStatus:
    """A gate's state and the sentence ``status`` shows for it."""

    gate: str
    state: str  # OPEN, CLOSED or PENDING
    reason: str


class GateChecker(_Poller):
    """Non-blocking gates: :meth:`state` returns at once and keeps one GET per gate going.

    A gate is polled when first asked about, then again at most every
    ``every`` seconds (and never while its previous GET is in flight). Its
    state is its latest answer: ``open`` for 2xx, ``closed`` for anything
    else, and ``closed`` too once a GET has been in flight longer than
    ``timeout``. It is ``pending`` while there is no answer yet, or only one
    older than ``2 * every + timeout`` (an answer from before a long pause,
    such as the previous step's, is not taken as today's).
    """

    def __init__(self, *, timeout: float = GATE_TIMEOUT, every: float = GATE_EVERY,
                 session_factory: Callable[[], requests.Session] = requests.Session) -> None:
        """Raises ValueError unless ``timeout`` and ``every`` are above 0."""
        if not timeout > 0 or not every > 0:
            raise ValueError("timeout and every must be above 0")
        super().__init__(session_factory, "gate")
        self.timeout = timeout
        self.every = every
        self._gates: Dict[str, _Probe] = {}
        self._last: Dict[str, GateStatus] = {}

    def state(self, gate: str, url: str, now: float) -> str:
        """``open``, ``closed`` or ``pending`` for ``gate`` at ``url``; starts a GET when one is due."""
        return self.check(gate, url, now).state

    def check(self, gate: str, url: str, now: float) -> GateStatus:
        """:meth:`state` with its reason, e.g. ``waiting for gate confirm_step: https://ci.example:443 answered 403``."""
        with self._lock:
            probe = self._gates.get(gate)
            if probe is None or probe.url != url:
                probe = self._gates[gate] = _Probe(url, self.timeout)
            due = probe.asked_at is None or now - probe.asked_at >= self.every or now < probe.asked_at
            if not probe.in_flight and due:
                self._start(probe, now)
            answer = probe.answer
            asked_at = probe.asked_at if probe.asked_at is not None else now
            if probe.in_flight and now - asked_at > self.timeout:
                status = GateStatus(gate, CLOSED, f"waiting for gate {gate}: {probe.shown} did not answer within "
                                                  f"{self.timeout:g} s")
            elif answer is not None and 0 <= now - answer.asked_at <= 2 * self.every + self.timeout:
                if answer.ok:
                    status = GateStatus(gate, OPEN, f"gate {gate} is open: {probe.shown} {answer.text}")
                else:
                    status = GateStatus(gate, CLOSED, f"waiting for gate {gate}: {probe.shown} {answer.text}")
            else:
                status = GateStatus(gate, PENDING, f"waiting for gate {gate}: asking {probe.shown}")
            self._last[gate] = status
            return status

    def reason(self, gate: str) -> Optional[str]:
        """The reason of the latest :meth:`check` of ``gate``, or None if it was never asked about."""
        with self._lock:
            status = self._last.get(gate)
            return None if status is None else status.reason


class HttpCheckResult(NamedTuple):
    """One URL of ``analysis.http_checks``: ``ok`` True (2xx), False (failed) or None (first answer awaited)."""

    url: str
    ok: Optional[bool]
    reason: str


class HttpChecker(_Poller):
    """``analysis.http_checks`` of one rollout, fetched in the background at every check.

    Call :meth:`results` (or :meth:`check`) once per ``analysis.interval``:
    each call starts a new GET of every URL whose previous one has finished
    (and started at least ``interval / 2`` ago), then reports the latest
    answers. So each check sees the answers to the GETs started one check
    earlier. A URL fails when its answer is not 2xx, or when its GET has been
    in flight longer than its timeout plus one interval ("no answer within"),
    or when its latest answer is older than ``2 * interval + timeout`` with
    no GET under way. A URL that has not answered yet, with its GET still
    within that time, is None: inconclusive, not failed.
    """

    def __init__(self, checks: Sequence[HttpCheckSettings], interval: float, *,
                 session_factory: Callable[[], requests.Session] = requests.Session) -> None:
        """Raises ValueError unless ``interval`` is above 0."""
        if not interval > 0:
            raise ValueError("interval must be above 0")
        super().__init__(session_factory, "http check")
        self.interval = interval
        self._checks: Tuple[_Probe, ...] = tuple(_Probe(c.url, c.timeout, f"{HTTP_CHECK_NAME}[{i}]")
                                                 for i, c in enumerate(checks))

    @property
    def urls(self) -> List[str]:
        return [probe.url for probe in self._checks]

    def poll(self, now: float) -> None:
        """Start a GET of every URL that is due (none in flight, the last one started ``interval / 2`` ago)."""
        with self._lock:
            for probe in self._checks:
                due = (probe.asked_at is None or now - probe.asked_at >= self.interval / 2
                       or now < probe.asked_at)
                if not probe.in_flight and due:
                    self._start(probe, now)

    def results(self, now: float) -> List[HttpCheckResult]:
        """:meth:`poll`, then one result per URL, in the order of the settings."""
        self.poll(now)
        results = []
        with self._lock:
            for probe in self._checks:
                results.append(self._result(probe, now))
        return results

    def _result(self, probe: _Probe, now: float) -> HttpCheckResult:
        answer = probe.answer
        overdue = probe.timeout + self.interval
        stale = 2 * self.interval + probe.timeout
        if probe.in_flight and probe.asked_at is not None and now - probe.asked_at > overdue:
            return HttpCheckResult(probe.url, False, f"{probe.shown}: no answer within {overdue:g} s")
        if answer is not None and 0 <= now - answer.asked_at <= stale:
            return HttpCheckResult(probe.url, answer.ok, f"{probe.shown} {answer.text}")
        if probe.in_flight:
            return HttpCheckResult(probe.url, None, f"{probe.shown}: waiting for its first answer")
        return HttpCheckResult(probe.url, False, f"{probe.shown}: no answer within {stale:g} s")

    def check(self, now: float) -> Check:
        """The results at ``now`` as an analysis :class:`Check` named ``http_checks``, for ``evaluate``."""
        results = self.results(now)

        def run(canary: Stats, stable: Stats, thresholds: Thresholds) -> CheckResult:
            return http_check_result(results, canary, stable)

        return Check(HTTP_CHECK_NAME, run, "a URL of analysis.http_checks did not answer 2xx in time")


def http_check_result(results: Sequence[HttpCheckResult], canary: Stats, stable: Stats) -> CheckResult:
    """``fail`` if any URL failed, else ``inconclusive`` if any awaits its first answer, else ``pass``.

    ``value`` is the number of failed URLs, ``threshold`` 0. It does not depend
    on traffic: a failing health endpoint fails the check however few
    requests the canary had.
    """
    failed = [r for r in results if r.ok is False]
    waiting = [r for r in results if r.ok is None]
    if failed:
        verdict, reason = FAIL, "; ".join(r.reason for r in failed)
    elif waiting:
        verdict, reason = INCONCLUSIVE, "; ".join(r.reason for r in waiting)
    else:
        verdict = PASS
        reason = f"{len(results)} of {len(results)} URL{'s' if len(results) != 1 else ''} answered 2xx"
    return CheckResult(HTTP_CHECK_NAME, verdict, float(len(failed)), 0.0, canary.requests, stable.requests, reason)
