"""The daemon's local API: one JSON request and one JSON answer per connection on a unix socket.

Wire format (UTF-8, each one line ending in ``\\n``)::

    request   {"command": "status", "args": {"name": "app"}}
    answer    {"ok": true, "result": ...}
              {"ok": false, "error": "one line", "exit_code": 2}

Access: the socket lives in a directory of its own, 0700 (0750 with a
``control_group``), and is 0600 (0660); on top of the file modes every peer is
checked with ``SO_PEERCRED``: root, the daemon's own user, or a member of the
control group (primary or supplementary), nobody else. File modes alone would
let anyone in once an operator loosened them by hand.

The server's threads only read requests and write answers, within fixed
limits (:data:`LIMITS`, :mod:`nginx_canary.daemon.bounded_server`); what a request
does is decided by the ``handle`` callable it is given, which the daemon runs
on its main loop (see :mod:`nginx_canary.daemon.service`). A request nested deeper
than :data:`MAX_JSON_DEPTH` is answered as a bad request.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import re
import socket
import stat
import struct
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

from nginx_canary.daemon.bounded_server import BoundedServer, Limits, Refusal
from nginx_canary.errors import BadInputError, CanaryError, ControlError, DaemonNotRunningError, ExitCode

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Deepest nesting of arrays and objects a request may have (the CLI's requests have 2 or 3 levels).
MAX_JSON_DEPTH = 32
#: A peer gets this long, in total, to send its request.
REQUEST_TIMEOUT = 5.0
#: What the server may hold (see :mod:`nginx_canary.daemon.bounded_server`): 4 workers (a command may wait for
#: the main loop, e.g. behind a step change), 64 connections being read, 32 requests waiting for a worker.
LIMITS = Limits(workers=4, max_pending=64, queue=32, request_deadline=REQUEST_TIMEOUT, answer_deadline=10.0,
                max_request_bytes=MAX_REQUEST_BYTES)
#: How long the CLI retries a connect refused for a full listen backlog (many clients at once).
CONNECT_TIMEOUT = 10.0
#: How long the CLI waits for an answer: a command may wait for the writer lock and an nginx reload.
DEFAULT_CLIENT_TIMEOUT = 120.0

Handler = Callable[[str, Dict[str, Any]], Any]


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection (from ``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int
    groups: FrozenSet[int] = frozenset()


def peer_of(conn: socket.socket) -> Peer:
    """The credentials of a connected unix-socket peer. Raises OSError if the kernel will not say."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid, _supplementary_groups(pid))


def _supplementary_groups(pid: int) -> FrozenSet[int]:
    # SO_PEERCRED carries the primary group only; /proc has the rest while the peer lives.
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return frozenset()


def group_id(group: Optional[str]) -> Optional[int]:
    """The gid of a group name or numeric id; None for None. Raises ControlError for an unknown group."""
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlError(f"control_group {group!r}: no such group") from None


def is_allowed(peer: Peer, daemon_uid: int, control_gid: Optional[int]) -> bool:
    """Root, the daemon's user, or a member of the control group."""
    if peer.uid in (0, daemon_uid):
        return True
    return control_gid is not None and (peer.gid == control_gid or control_gid in peer.groups)


def _prepare_directory(directory: str, control_gid: Optional[int]) -> None:
    """Create the socket's directory, or check that an existing one is ours alone, and set its mode.

    Raises ControlError naming the directory.
    """
    mode = 0o750 if control_gid is not None else 0o700
    try:
        os.makedirs(directory, mode=mode)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlError(f"cannot create the control socket's directory {directory}: {exc.strerror}") from exc
    try:
        info = os.lstat(directory)
        entries = os.listdir(directory)
    except OSError as exc:
        raise ControlError(f"cannot inspect the control socket's directory {directory}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"the control socket's directory {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise ControlError(f"the control socket's directory {directory} belongs to uid {info.st_uid}, not to the "
                           "daemon's user: give the socket a directory of its own")
    # The mode is forced below; a shared directory (/run, /tmp) must never get it.
    foreign = [e for e in entries if not e.endswith(".sock")]
    if foreign:
        raise ControlError(f"the control socket's directory {directory} holds other files ({', '.join(sorted(foreign)[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}): give the socket a directory of its own")
    try:
        if control_gid is not None:
            os.chown(directory, -1, control_gid)
        os.chmod(directory, mode)
    except OSError as exc:
        raise ControlError(f"cannot set the mode of {directory}: {exc.strerror}") from exc


def _clear_stale_socket(path: str) -> None:
    """Remove a socket left by a daemon that died; refuse when a live daemon answers on it.

    Raises ControlError.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path} exists and is not a socket; remove it or choose another control_socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ControlError(f"cannot probe {path}: {exc.strerror}") from exc
    else:
        raise ControlError(f"another nginx-canary daemon is listening on {path}")
    finally:
        probe.close()
    os.unlink(path)


class ControlServer:
    """Serves the control socket; ``handle(command, args)`` makes each answer.

    ``handle`` returns JSON data or raises a CanaryError (answered as an error
    with its exit code); anything else it raises is answered as an internal
    error and logged. Requests are read and answered by a
    :class:`~nginx_canary.daemon.bounded_server.BoundedServer` within :data:`LIMITS`
    (fitted to the open-file limit), ``request_timeout`` being the total time
    a peer has to send its request.
    """

    def __init__(self, path: str, handle: Handler, *, control_group: Optional[str] = None,
                 request_timeout: float = REQUEST_TIMEOUT, limits: Optional[Limits] = None) -> None:
        """Raises ControlError for an unknown group."""
        self.path = path
        self.handle = handle
        self.control_gid = group_id(control_group)
        self.limits = replace(limits or LIMITS, request_deadline=request_timeout).fit()
        self._server: Optional[BoundedServer] = None
        self._inode: Optional[Tuple[int, int]] = None

    def start(self) -> None:
        """Bind the socket (directory and modes as documented) and start serving.

        Raises ControlError: the directory is unsuitable, another daemon is
        listening, or the server's threads cannot be started.
        """
        _prepare_directory(os.path.dirname(self.path) or ".", self.control_gid)
        _clear_stale_socket(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # never a moment with a looser mode than 0600
        try:
            listener.bind(self.path)
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot bind the control socket {self.path}: {exc.strerror}") from exc
        finally:
            os.umask(old_umask)
        try:
            if self.control_gid is not None:
                os.chown(self.path, -1, self.control_gid)
                os.chmod(self.path, 0o660)
            info = os.stat(self.path)
            self._inode = (info.st_dev, info.st_ino)
            listener.listen(socket.SOMAXCONN)
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot set up the control socket {self.path}: {exc.strerror}") from exc
        self._server = BoundedServer(listener, _ControlProtocol(self), self.limits, name="control socket")
        try:
            self._server.start()
        except RuntimeError as exc:
            self._server = None
            self._unlink()
            raise ControlError(f"cannot serve the control socket {self.path}: {exc}") from None

    def close(self) -> None:
        """Stop serving and remove the socket file (only if it is still ours)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._unlink()

    def _unlink(self) -> None:
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass


class _ControlProtocol:
    """One JSON line in, one JSON line out, for :class:`BoundedServer`; the peer is checked at accept."""

    def __init__(self, server: ControlServer) -> None:
        self._server = server

    def accepted(self, conn: socket.socket) -> Peer:
        return peer_of(conn)

    def request_end(self, data: bytes) -> int:
        end = data.find(b"\n")
        return end + 1 if end >= 0 else -1

    def refusal(self, why: Refusal, context: Any) -> bytes:
        if not self._allowed(context):
            return _encode(_PERMISSION_DENIED)
        if why is Refusal.BUSY:
            return _encode({"ok": False, "exit_code": int(ExitCode.BUSY),
                            "error": "the daemon is busy: too many requests on the control socket; try again"})
        reason = {Refusal.SLOW: f"no complete request within {self._server.limits.request_deadline:g} s",
                  Refusal.TOO_LONG: f"line longer than {MAX_REQUEST_BYTES} bytes",
                  Refusal.CLOSED_EARLY: "connection closed before a complete line"}.get(why, why.value)
        return _encode({"ok": False, "exit_code": int(ExitCode.BAD_INPUT), "error": f"bad request: {reason}"})

    def _allowed(self, peer: Peer) -> bool:
        return is_allowed(peer, os.geteuid(), self._server.control_gid)

    def serve(self, conn: socket.socket, request: bytes, context: Any) -> None:
        peer: Peer = context
        if not self._allowed(peer):
            # The request was read (never acted on) before this answer: closing on an unread request
            # resets the connection, and the client would see "Broken pipe" instead of the refusal.
            log.warning("control socket: refused pid %d uid %d gid %d (not root, the daemon's user or in "
                        "control_group)", peer.pid, peer.uid, peer.gid)
            _send(conn, _PERMISSION_DENIED)
            return
        try:
            command, args = _parse_request(request.rstrip(b"\n"))
        except ControlError as exc:
            _send(conn, {"ok": False, "exit_code": int(ExitCode.BAD_INPUT), "error": f"bad request: {exc}"})
            return
        try:
            answer: Dict[str, Any] = {"ok": True, "result": self._server.handle(command, args)}
        except CanaryError as exc:
            answer = {"ok": False, "error": str(exc), "exit_code": int(exc.exit_code)}
        except Exception as exc:  # noqa: BLE001 - a bug must reach the client as one line, not kill the thread
            log.exception("control socket: %s failed", command)
            answer = {"ok": False, "error": f"internal error in the daemon: {exc!r}",
                      "exit_code": int(ExitCode.NGINX_REJECTED)}
        _send(conn, answer)


_PERMISSION_DENIED = {"ok": False, "exit_code": int(ExitCode.BAD_INPUT),
                      "error": "permission denied: the control socket takes root, the daemon's user "
                               "and members of control_group only"}


def _read_line(conn: socket.socket, limit: int) -> bytes:
    """Read up to the first newline. Raises ControlError (too long, closed early) or OSError (timeout)."""
    data = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            raise ControlError("connection closed before a complete line")
        data += chunk
        end = data.find(b"\n")
        if end >= 0:
            return bytes(data[:end])
        if len(data) > limit:
            raise ControlError(f"line longer than {limit} bytes")


def _parse_request(raw: bytes) -> Tuple[str, Dict[str, Any]]:
    """The command and args of a request line. Raises ControlError, one line, for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ControlError(f"not JSON: {exc}") from None
    if _nesting(text) > MAX_JSON_DEPTH:
        # json.loads recurses once per level: 30,000 levels raise RecursionError, not ValueError.
        raise ControlError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise ControlError(f"not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise ControlError('expected {"command": NAME, "args": {...}}')
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise ControlError("args must be an object")
    return request["command"], args


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _nesting(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _encode(answer: Dict[str, Any]) -> bytes:
    """One answer line. Raises ValueError for data JSON cannot carry (NaN)."""
    return json.dumps(answer, sort_keys=True, allow_nan=False).encode("utf-8") + b"\n"


def _send(conn: socket.socket, answer: Dict[str, Any]) -> None:
    try:
        conn.sendall(_encode(answer))
    except (OSError, ValueError) as exc:
        log.warning("control socket: cannot send the answer: %s", exc)


def call(path: str, command: str, args: Optional[Dict[str, Any]] = None, *,
         timeout: float = DEFAULT_CLIENT_TIMEOUT) -> Any:
    """Send one command to the daemon and return its result.

    Raises:
        DaemonNotRunningError: nothing listens on ``path``.
        ControlError: permission denied, a timeout or a garbled answer.
        CanaryError: the daemon's error, with the daemon's exit code.
    """
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        try:
            _connect(conn, path, time.monotonic() + min(timeout, CONNECT_TIMEOUT))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunningError(f"the nginx-canary daemon is not running (nothing listens on {path}); "
                                        "start it with `nginx-canary daemon` or `systemctl start nginx-canary`") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as root or as a member of the daemon's "
                               "control_group") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror}") from None
        request = {"command": command, "args": args or {}}
        try:
            try:
                conn.sendall(json.dumps(request).encode("utf-8") + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon answered (a refusal) without reading it all: the answer may still be there
            raw = _read_line(conn, MAX_ANSWER_BYTES)
        except socket.timeout:
            raise ControlError(f"the daemon did not answer {command!r} within {timeout:g} s") from None
        except ControlError as exc:
            raise ControlError(f"the daemon broke off {command!r}: {exc}") from None
        except OSError as exc:
            raise ControlError(f"talking to the daemon on {path}: {exc.strerror}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ControlError("the daemon's answer is not JSON") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ControlError("the daemon's answer is not understood")
    if answer["ok"]:
        return answer.get("result")
    raise _remote_error(str(answer.get("error", "unknown error")), answer.get("exit_code"))


def _connect(conn: socket.socket, path: str, deadline: float) -> None:
    """Connect, retrying while the listen backlog is full (EAGAIN) until ``deadline``. Raises OSError."""
    while True:
        try:
            conn.connect(path)
            return
        except BlockingIOError:
            # A unix socket does not queue a connect beyond the backlog: EAGAIN, even with a timeout set.
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _remote_error(message: str, code: Any) -> CanaryError:
    error = BadInputError(message) if code == ExitCode.BAD_INPUT else CanaryError(message)
    if isinstance(code, int) and code in iter(ExitCode):
        error.exit_code = ExitCode(code)
    return error
