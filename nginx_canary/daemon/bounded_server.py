"""One request per connection, on resources fixed at start: the engine of the metrics endpoint and the control socket.

Every descriptor or thread a client can make the daemon hold is one that a
rollback's ``nginx -t`` and reload cannot have. So a server fixes all it uses
when it starts:

* **One I/O thread** accepts every connection and reads every request with a
  selector on non-blocking sockets: a slow client holds a descriptor, never a
  thread.
* **A total deadline**: a connection has ``request_deadline`` seconds from
  accept to its request's last byte; a byte every few seconds does not extend it.
* **A cap**: at most ``max_pending`` connections are read at once; one more
  evicts the oldest. A real client sends its request as soon as it is
  connected and is read long before its turn to be evicted comes, however
  many slow ones keep reconnecting; refusing the newest instead would let
  ``max_pending`` slow clients lock everyone out.
* **A fixed pool**: a complete request goes to a queue of at most ``queue``
  entries served by ``workers`` threads started with the server; a request
  that finds the queue full is refused at once with the protocol's "busy" answer.
* **An I/O thread that never dies**: it starts no thread; an ``accept`` that
  fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)
  closes the oldest pending connection and pauses accepting for
  :data:`ACCEPT_PAUSE`; any other failure is logged and the loop goes on.

The descriptor reserve: a server holds at most :meth:`Limits.descriptors`
descriptors, and :meth:`Limits.fit` shrinks its caps to an eighth of the
process's soft ``RLIMIT_NOFILE``; so the daemon's two servers never take more
than a quarter of the open-file limit, and the rest stays for the rollouts'
logs, ``nginx -t`` and reloads. A fixed cap well below the limit is simpler
than pre-opened spare descriptors released before a restore, and covers
every restore (even one started by a command while the servers are full).

Refusals (too slow, too long, closed before a complete request, busy) are
answered by the I/O thread without blocking (the answer is dropped if the
client's buffer is full), counted, and logged as one summary line at most
every :data:`LOG_EVERY` seconds.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import queue
import resource
import selectors
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

log = logging.getLogger(__name__)

#: How long accepting pauses after an accept failed for want of descriptors or memory.
ACCEPT_PAUSE = 0.1
#: How long a refused connection is drained (its unread bytes discarded) so the client reads the refusal.
DRAIN = 1.0
#: At most one summary line of refused connections per this many seconds.
LOG_EVERY = 10.0
#: The share of the soft open-file limit one server may hold.
NOFILE_SHARE = 8
_ACCEPT_BATCH = 64
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Refusal(enum.Enum):
    """Why a connection was answered without being served."""

    SLOW = "too slow"            # no complete request within request_deadline
    TOO_LONG = "too long"        # more than max_request_bytes without a complete request
    CLOSED_EARLY = "closed early"  # the client closed (or half-closed) before a complete request
    BUSY = "busy"                # the queue of complete requests was full
    EVICTED = "evicted"          # max_pending reached: the oldest pending connection made room (no answer)


@dataclass(frozen=True)
class Limits:
    """What one server may hold. See the module docstring."""

    workers: int = 2
    max_pending: int = 64
    queue: int = 16
    request_deadline: float = 5.0
    answer_deadline: float = 10.0
    max_request_bytes: int = 8192

    def descriptors(self) -> int:
        """The most descriptors the server holds: the listener, pending, queued and served connections."""
        return 1 + self.max_pending + self.queue + self.workers

    def fit(self, soft_nofile: Optional[int] = None) -> "Limits":
        """These limits, with ``max_pending`` and ``queue`` shrunk so that :meth:`descriptors` stays within
        1/:data:`NOFILE_SHARE` of ``soft_nofile`` (default: this process's soft RLIMIT_NOFILE); never below 4 and 2.
        """
        if soft_nofile is None:
            soft_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_nofile == resource.RLIM_INFINITY:
            return self
        budget = soft_nofile // NOFILE_SHARE
        if self.descriptors() <= budget:
            return self
        rest = max(6, budget - 1 - self.workers)
        queue_size = max(2, min(self.queue, rest // 4))
        return replace(self, queue=queue_size, max_pending=max(4, min(self.max_pending, rest - queue_size)))


class ConnectionProtocol(Protocol):
    """What a :class:`BoundedServer` asks of the protocol it serves."""

    def accepted(self, conn: socket.socket) -> Any:
        """Called on the I/O thread for each new connection; returns its context. Raises OSError to drop it."""

    def request_end(self, data: bytes) -> int:
        """The length of the complete request at the start of ``data``, or -1 while it is incomplete."""

    def refusal(self, why: Refusal, context: Any) -> bytes:
        """The answer to a refused connection (b"" for none). Must not block or raise."""

    def serve(self, conn: socket.socket, request: bytes, context: Any) -> None:
        """Called on a worker thread: answer ``request`` on ``conn`` (blocking, with the answer deadline as its
        timeout). The server closes ``conn`` afterwards and logs anything raised."""


@dataclass
class _Pending:
    conn: socket.socket
    context: Any
    deadline: float
    data: bytearray
    draining: bool = False


class BoundedServer:
    """Serves ``protocol`` on the listening socket ``listener``, within ``limits``. See the module docstring.

    Takes ownership of ``listener`` (closed by :meth:`close`).
    """

    def __init__(self, listener: socket.socket, protocol: ConnectionProtocol, limits: Limits, *, name: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.limits = limits
        self._listener = listener
        self._protocol = protocol
        self._clock = clock
        self._pending: "OrderedDict[int, _Pending]" = OrderedDict()
        # Unbounded as a Queue: only the I/O thread puts requests, and it keeps to limits.queue itself,
        # so that close() can always add the workers' stop marks.
        self._queue: "queue.Queue[Optional[Tuple[socket.socket, bytes, Any]]]" = queue.Queue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closing = False
        self._accept_paused_until: Optional[float] = None
        self._threads: List[threading.Thread] = []
        self._counts: Dict[str, int] = {}
        self._next_log = 0.0

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the I/O thread and the workers.

        Raises RuntimeError when a thread cannot be started (nothing is left running then).
        """
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            for number in range(self.limits.workers):
                self._start_thread(self._work, f"{self.name} worker {number + 1}")
            self._start_thread(self._run, f"{self.name} I/O")
        except RuntimeError:
            self.close()
            raise

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop pending and queued connections, let the workers finish what they serve
        (up to ``timeout`` in all). Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        deadline = time.monotonic() + timeout
        io_threads = [t for t in self._threads if t.name.endswith(" I/O")]
        for thread in io_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].close()
        workers = [t for t in self._threads if t not in io_threads]
        for _ in workers:
            self._queue.put(None)
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        for pending in list(self._pending.values()):
            self._drop(pending)
        try:
            self._selector.close()
        finally:
            self._listener.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full: the loop wakes anyway

    # -- the I/O thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - the loop must outlive any bug or fault: it is the only way in
                log.exception("%s: error in the I/O loop", self.name)
                time.sleep(0.1)

    def _turn(self) -> None:
        now = self._clock()
        for key, _ in self._selector.select(self._timeout(now)):
            if self._closing:
                return
            if key.fileobj is self._listener:
                self._accept()
            elif key.fileobj == self._wake_r:
                try:
                    os.read(self._wake_r, 512)
                except BlockingIOError:
                    pass
            else:
                pending = self._pending.get(key.fd)
                if pending is not None:
                    self._read(pending)
        now = self._clock()
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            if pending.draining:
                self._drop(pending)
            else:
                self._refuse(pending, Refusal.SLOW, drain=False)
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._log_counts(now)

    def _timeout(self, now: float) -> Optional[float]:
        wakes = [p.deadline for p in self._pending.values()]
        if self._accept_paused_until is not None:
            wakes.append(self._accept_paused_until)
        if any(self._counts.values()):
            wakes.append(self._next_log)
        return max(0.0, min(wakes) - now) if wakes else None

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                self._count("accept failed: " + (os.strerror(exc.errno) if exc.errno else str(exc)))
                if self._pending:
                    self._evict_oldest()
                self._selector.unregister(self._listener)
                self._accept_paused_until = self._clock() + ACCEPT_PAUSE
                return
            self._take(conn)

    def _take(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            context = self._protocol.accepted(conn)
        except OSError as exc:
            self._count("dropped at accept: " + (exc.strerror or str(exc)))
            conn.close()
            return
        if len(self._pending) >= self.limits.max_pending:
            self._evict_oldest()
        pending = _Pending(conn, context, self._clock() + self.limits.request_deadline, bytearray())
        self._pending[conn.fileno()] = pending
        self._selector.register(conn, selectors.EVENT_READ, None)
        self._read(pending)  # a real client's request is usually there already

    def _evict_oldest(self) -> None:
        oldest = next(iter(self._pending.values()))
        self._count(Refusal.EVICTED.value)
        self._drop(oldest)

    def _read(self, pending: _Pending) -> None:
        try:
            chunk = pending.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(pending)
            return
        if pending.draining:
            if not chunk:
                self._drop(pending)
            return
        if not chunk:
            self._refuse(pending, Refusal.CLOSED_EARLY, drain=False)
            return
        pending.data += chunk
        end = self._protocol.request_end(bytes(pending.data))
        if end >= 0:
            self._dispatch(pending, bytes(pending.data[:end]))
        elif len(pending.data) > self.limits.max_request_bytes:
            self._refuse(pending, Refusal.TOO_LONG, drain=True)

    def _dispatch(self, pending: _Pending, request: bytes) -> None:
        if self._queue.qsize() >= self.limits.queue:
            self._refuse(pending, Refusal.BUSY, drain=True)
            return
        self._forget(pending)
        self._queue.put((pending.conn, request, pending.context))

    def _refuse(self, pending: _Pending, why: Refusal, *, drain: bool) -> None:
        """Answer ``why`` without blocking; then drain the connection for :data:`DRAIN` s or close it at once."""
        self._count(why.value)
        answer = self._protocol.refusal(why, pending.context)
        try:
            if answer:
                pending.conn.send(answer, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            # Unread bytes at close would reset the connection, and the client would lose the answer.
            pending.conn.shutdown(socket.SHUT_WR)
        except OSError:
            drain = False
        if not drain:
            self._drop(pending)
            return
        pending.draining = True
        pending.data = bytearray()
        pending.deadline = self._clock() + DRAIN

    def _forget(self, pending: _Pending) -> None:
        """Stop watching the connection (it belongs to a worker now, or is about to be closed)."""
        self._pending.pop(pending.conn.fileno(), None)
        try:
            self._selector.unregister(pending.conn)
        except (KeyError, ValueError):
            pass

    def _drop(self, pending: _Pending) -> None:
        self._forget(pending)
        pending.conn.close()

    # -- accounting ----------------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        """Count a refusal (I/O thread only, like every other accounting)."""
        self._counts[what] = self._counts.get(what, 0) + 1

    def _log_counts(self, now: float) -> None:
        if now < self._next_log:
            return
        counts, self._counts = self._counts, {}
        if counts:
            log.warning("%s: connections refused since the last report: %s", self.name,
                        ", ".join(f"{what} {n}" for what, n in sorted(counts.items())))
            self._next_log = now + LOG_EVERY

    # -- the workers -------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            conn, request, context = item
            try:
                conn.settimeout(self.limits.answer_deadline)
                self._protocol.serve(conn, request, context)
            except Exception:  # noqa: BLE001 - one request's failure must not take a worker away
                log.exception("%s: serving a request failed", self.name)
            finally:
                conn.close()
