"""The fleet's etcd, reached with etcd3gw: keys under one prefix, compare-and-swap, leases, watches.

Every key a caller names is relative to the fleet's prefix
(``/nginx-canary/FLEET/``). Every call has a deadline (``timeout`` seconds for
connecting and for each read), and every failure (etcd down, frozen, refusing,
answering nonsense) comes out as :class:`~nginx_canary.errors.FleetError`, so a
dead etcd never hangs the daemon's loop. Endpoints are tried in turn: a call
that cannot reach one moves the next call to the next. A write that failed
with a timeout may still be applied (a frozen etcd keeps the request and
serves it when it thaws): callers re-read rather than assume it did not
happen, and compare-and-swap writes make a retry safe.

Leases are not kept alive in the background: the daemon's loop calls
:meth:`FleetStore.refresh` (every ``ttl / 3`` seconds, say). A loop that is
stuck then loses its leases (its membership, its coordinator role) instead of
a helper thread vouching for a daemon that no longer works.

Plain :meth:`FleetStore.put` is for keys only one writer owns: a timed-out
put can land after a later one and undo it. Shared keys go through :meth:`swap`.

Watches do not use etcd3gw's ``watch``: its create request has no timeout (it
hangs on a frozen etcd), a broken stream ends its thread silently (the
iterator blocks for ever) and a compacted start revision is ignored. A
:class:`Watch` streams the gateway's ``/watch`` itself, reconnects from the
next revision when the stream breaks or stays idle for ``idle`` seconds, and
reports what went wrong to whoever polls it.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception

from nginx_canary.errors import FleetError

ROOT = "/nginx-canary/"

Value = Union[str, bytes]


class LeaseLost(FleetError):
    """The lease expired or was revoked: every key attached to it is gone."""


class HistoryCompacted(FleetError):
    """A watch's start revision was compacted away: read the keys again and watch from a fresh revision."""

    def __init__(self, message: str, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(message)


@dataclass(frozen=True)
class Entry:
    """One key's value and revisions; ``key`` is relative to the fleet prefix, ``lease`` 0 for none."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Listing:
    """The keys under a prefix, and the store revision they were read at (watch from ``revision + 1``)."""

    entries: List[Entry]
    revision: int


@dataclass(frozen=True)
class Event:
    """A change seen by a watch: ``kind`` is ``"put"`` or ``"delete"`` (``value`` empty)."""

    kind: str
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True)
class Held:
    """A guard for :meth:`FleetStore.swap`: ``key`` must exist and belong to ``lease`` (fencing)."""

    key: str
    lease: Lease


def _b64(data: Value) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's range_end for a prefix)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Etcd3Exception):
        # etcd3gw keeps the message in detail_text; str() of its exceptions is often empty.
        detail = (exc.detail_text or "").strip() or " ".join(str(a) for a in exc.args)
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"




def _token_refused(exc: BaseException) -> bool:
    return "invalid auth token" in _describe(exc).lower()


def _session(ca_cert: Optional[str], cert: Optional[str], key: Optional[str]) -> requests.Session:
    session = requests.Session()
    if ca_cert is not None:
        session.verify = ca_cert
    if cert is not None and key is not None:
        session.cert = (cert, key)
    return session


class FleetStore:
    """The fleet named ``fleet`` in the etcd cluster at ``endpoints`` (``http(s)://host:port`` URLs).

    Raises FleetError for an endpoint that is not such a URL.
    """

    def __init__(self, endpoints: Sequence[str], fleet: str, *, timeout: float = 2.0,
                 ca_cert: Optional[str] = None, cert: Optional[str] = None, key: Optional[str] = None,
                 user: Optional[str] = None, password: Optional[str] = None) -> None:
        """``user``/``password``: etcd's own authentication (a token from ``/auth/authenticate``, renewed
        when etcd says it is no longer valid)."""
        if not endpoints:
            raise FleetError("no etcd endpoint given")
        self._credentials = (user, password) if user is not None else None
        self._token: Optional[str] = None
        self.prefix = f"{ROOT}{fleet}/"
        self.timeout = timeout
        self._tls = (ca_cert, cert, key)
        self._session = _session(ca_cert, cert, key)
        self._clients = [self._client(url) for url in endpoints]
        self._current = 0
        self._lock = threading.Lock()

    def _client(self, url: str) -> etcd3gw.Etcd3Client:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FleetError(f"etcd endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        try:
            port = parts.port or 2379
        except ValueError as exc:
            raise FleetError(f"etcd endpoint {url!r}: {exc}") from exc
        ca_cert, cert, key = self._tls
        return etcd3gw.client(host=parts.hostname, port=port, protocol=parts.scheme, timeout=self.timeout,
                              ca_cert=ca_cert, cert_key=key, cert_cert=cert, session=self._session)

    @property
    def endpoint(self) -> str:
        """The endpoint the next call goes to."""
        return self._clients[self._current].base_url

    def path(self, key: str) -> bytes:
        """The full etcd key of ``key`` (relative to the fleet prefix)."""
        return (self.prefix + key).encode("utf-8")

    def _call(self, what: str, api: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        # One session is shared by every call: the lock keeps calls from different threads apart.
        with self._lock:
            client = self._clients[self._current]
            for attempt in (1, 2):
                try:
                    if self._credentials is not None and self._token is None:
                        self._authenticate(client)
                    return client.post(client.get_url(api), json=payload)
                except (Etcd3Exception, requests.RequestException, ValueError, KeyError) as exc:
                    if attempt == 1 and self._credentials is not None and _token_refused(exc):
                        self._token = None  # expired (etcd's simple tokens last 5 minutes): log in again
                        continue
                    if isinstance(exc, (ConnectionFailedError, ConnectionTimeoutError, requests.RequestException)):
                        self._current = (self._current + 1) % len(self._clients)
                    raise FleetError(f"etcd {client.base_url}: {what}: {_describe(exc)}") from exc
            raise AssertionError("unreachable")

    def _authenticate(self, client: etcd3gw.Etcd3Client) -> None:
        """Log in as the configured user; the token goes on every later request of the shared session."""
        assert self._credentials is not None
        user, password = self._credentials
        self._session.headers.pop("Authorization", None)
        try:
            answer = client.post(client.get_url("/auth/authenticate"), json={"name": user, "password": password})
        except Etcd3Exception as exc:
            if isinstance(exc, (ConnectionFailedError, ConnectionTimeoutError)):
                raise
            raise FleetError(f"etcd {client.base_url}: user {user!r} could not log in: {_describe(exc)}") from None
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise FleetError(f"etcd {client.base_url}: user {user!r} could not log in: etcd gave no token "
                             f"(is auth enabled?)")
        self._token = token
        self._session.headers["Authorization"] = token

    def _entry(self, kv: Dict[str, Any]) -> Entry:
        return Entry(key=_unb64(kv["key"]).decode("utf-8")[len(self.prefix):], value=_unb64(kv.get("value", "")),
                     create_revision=int(kv.get("create_revision", 0)), mod_revision=int(kv.get("mod_revision", 0)),
                     version=int(kv.get("version", 0)), lease=int(kv.get("lease", 0)))

    def _range(self, what: str, payload: Dict[str, Any]) -> Listing:
        answer = self._call(what, "/kv/range", payload)
        return Listing([self._entry(kv) for kv in answer.get("kvs", [])], int(answer["header"]["revision"]))

    def get(self, key: str) -> Optional[Entry]:
        """The entry at ``key``, or None. Raises FleetError."""
        entries = self._range(f"get {key}", {"key": _b64(self.path(key))}).entries
        return entries[0] if entries else None

    def get_prefix(self, key: str = "") -> Listing:
        """Every entry whose key starts with ``key``, sorted by key, with the revision read at. Raises FleetError."""
        start = self.path(key)
        return self._range(f"get {key}*", {"key": _b64(start), "range_end": _b64(_prefix_end(start)),
                                           "sort_order": 1, "sort_target": 0})

    def revision(self) -> int:
        """The store's current revision. Raises FleetError."""
        start = self.path("")
        return self._range("revision", {"key": _b64(start), "range_end": _b64(_prefix_end(start)),
                                        "count_only": True}).revision

    def put(self, key: str, value: Value, lease: Optional[Lease] = None) -> int:
        """Write ``key`` unconditionally; returns the new revision. Raises FleetError."""
        payload: Dict[str, Any] = {"key": _b64(self.path(key)), "value": _b64(value)}
        if lease is not None:
            payload["lease"] = lease.id
        return int(self._call(f"put {key}", "/kv/put", payload)["header"]["revision"])

    def delete(self, key: str) -> bool:
        """Delete ``key``; true if it existed. Raises FleetError."""
        answer = self._call(f"delete {key}", "/kv/deleterange", {"key": _b64(self.path(key))})
        return int(answer.get("deleted", 0)) > 0

    def swap(self, key: str, value: Value, mod_revision: int, *, lease: Optional[Lease] = None,
             held: Sequence[Held] = ()) -> bool:
        """Write ``key`` only if its mod revision is still ``mod_revision`` (0: only if absent) and every
        ``held`` key still belongs to its lease; false (nothing written) otherwise. Raises FleetError."""
        compare: List[Dict[str, Any]] = [{"key": _b64(self.path(key)), "result": "EQUAL", "target": "MOD",
                                          "mod_revision": mod_revision}]
        compare += [{"key": _b64(self.path(h.key)), "result": "EQUAL", "target": "LEASE", "lease": h.lease.id}
                    for h in held]
        put: Dict[str, Any] = {"key": _b64(self.path(key)), "value": _b64(value)}
        if lease is not None:
            put["lease"] = lease.id
        answer = self._call(f"swap {key}", "/kv/txn", {"compare": compare, "success": [{"request_put": put}],
                                                         "failure": []})
        return bool(answer.get("succeeded", False))

    def create(self, key: str, value: Value, *, lease: Optional[Lease] = None, held: Sequence[Held] = ()) -> bool:
        """Write ``key`` only if it does not exist; false if it does. Raises FleetError."""
        return self.swap(key, value, 0, lease=lease, held=held)

    def grant(self, ttl: int) -> Lease:
        """A new lease of ``ttl`` seconds; nothing refreshes it but :meth:`refresh`. Raises FleetError."""
        answer = self._call(f"grant lease ({ttl}s)", "/lease/grant", {"TTL": ttl, "ID": 0})
        return Lease(int(answer["ID"]), int(answer.get("TTL", ttl)))

    def refresh(self, lease: Lease) -> int:
        """Keep ``lease`` alive for another TTL; returns the TTL granted. Raises LeaseLost if it has
        already expired (or was revoked), FleetError if etcd cannot be reached."""
        answer = self._call(f"refresh lease {lease.id:x}", "/lease/keepalive", {"ID": lease.id})
        ttl = int(answer.get("result", {}).get("TTL", 0))
        if ttl <= 0:
            raise LeaseLost(f"etcd lease {lease.id:x} has expired; its keys are gone")
        return ttl

    def revoke(self, lease: Lease) -> None:
        """End ``lease`` now, deleting its keys; a lease already gone is fine. Raises FleetError."""
        try:
            self._call(f"revoke lease {lease.id:x}", "/kv/lease/revoke", {"ID": lease.id})
        except FleetError as exc:
            if "lease not found" not in str(exc):
                raise

    def watch(self, key: str, start_revision: int, *, idle: float = 5.0) -> "Watch":
        """Watch every key starting with ``key`` from ``start_revision`` on (events at that revision
        included). The watch runs in a thread until :meth:`Watch.close`."""
        start = self.path(key)
        ca_cert, cert, tls_key = self._tls
        return Watch(self._clients[self._current], self.prefix,
                     {"key": _b64(start), "range_end": _b64(_prefix_end(start))}, start_revision,
                     session=_session(ca_cert, cert, tls_key), timeout=self.timeout, idle=idle)

    def close(self) -> None:
        self._session.close()


class Watch:
    """Changes under a prefix, streamed by a thread into a queue that :meth:`poll` drains."""

    def __init__(self, client: etcd3gw.Etcd3Client, prefix: str, request: Dict[str, Any], start_revision: int, *,
                 session: requests.Session, timeout: float, idle: float) -> None:
        self.next_revision = start_revision
        self._client = client
        self._prefix = prefix
        self._request = request
        self._session = session
        self._timeout = timeout
        self._idle = idle
        self._events: "queue.Queue[Event]" = queue.Queue()
        self._error: Optional[FleetError] = None
        self._stopped = threading.Event()
        self._response: Optional[requests.Response] = None
        self._thread = threading.Thread(target=self._run, name="fleet-watch", daemon=True)
        self._thread.start()

    @property
    def error(self) -> Optional[FleetError]:
        """Why the stream is down (None while it runs): what :meth:`poll` raises once the queue is empty."""
        return self._error

    def poll(self, timeout: float = 0.0) -> List[Event]:
        """The events seen since the last poll, waiting up to ``timeout`` for the first. Raises
        HistoryCompacted (the watch has ended) or FleetError while the stream is down (it keeps
        reconnecting from the revision after the last event delivered)."""
        events: List[Event] = []
        try:
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        if not events and self._error is not None:
            raise self._error
        return events

    def close(self) -> None:
        """Stop the stream and its thread."""
        self._stopped.set()
        response = self._response
        if response is not None:
            try:
                # Closing the response does not wake a thread blocked reading it; shutting the socket does.
                sock = socket.fromfd(response.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except (AttributeError, OSError, ValueError):
                pass
        self._thread.join(self._timeout + self._idle)
        self._session.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._stream()
            except HistoryCompacted as exc:
                self._error = exc
                return
            except FleetError as exc:
                self._error = exc
                self._stopped.wait(min(self._timeout, 1.0))
            except Exception as exc:  # noqa: BLE001 - a watch thread that died silently would look like a quiet fleet
                self._error = FleetError(f"etcd watch {self._prefix}: {_describe(exc)}")
                return

    def _stream(self) -> None:
        """One stream: returns when it breaks or idles (to reconnect); raises FleetError if it cannot start."""
        where = f"etcd {self._client.base_url}: watch {self._prefix}"
        request = dict(self._request, start_revision=self.next_revision)
        try:
            response = self._session.post(self._client.get_url("/watch"), json={"create_request": request},
                                          stream=True, timeout=(self._timeout, self._idle))
            response.raise_for_status()
            self._response = response
            lines = response.iter_lines()
            first = json.loads(next(lines))["result"]
        except (Etcd3Exception, requests.RequestException, ValueError, KeyError, StopIteration) as exc:
            raise FleetError(f"{where}: {_describe(exc)}") from exc
        self._check_canceled(where, first)
        if not first.get("created"):
            raise FleetError(f"{where}: etcd did not create the watch: {first}")
        self._error = None
        try:
            for line in lines:
                if self._stopped.is_set():
                    break
                result = json.loads(line).get("result", {}) if line else {}
                if self._check_canceled(where, result):
                    break
                self._deliver(result)
        except (requests.RequestException, ValueError):
            pass
        finally:
            self._response = None
            response.close()

    def _check_canceled(self, where: str, result: Dict[str, Any]) -> bool:
        """True if etcd ended the watch (to reconnect). Raises HistoryCompacted if it ended it for compaction."""
        if "compact_revision" in result:
            raise HistoryCompacted(f"{where}: revision {self.next_revision} is compacted (history starts at "
                                   f"{result['compact_revision']})", int(result["compact_revision"]))
        return bool(result.get("canceled"))

    def _deliver(self, result: Dict[str, Any]) -> None:
        for raw in result.get("events", []):
            kv = raw["kv"]
            revision = int(kv.get("mod_revision", 0))
            key = _unb64(kv["key"]).decode("utf-8")[len(self._prefix):]
            kind = "delete" if raw.get("type") == "DELETE" else "put"
            self._events.put(Event(kind, key, _unb64(kv.get("value", "")), revision))
            self.next_revision = revision + 1
