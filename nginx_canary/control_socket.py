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

The server thread only reads requests and writes answers; what a request does
is decided by the ``handle`` callable it is given, which the daemon runs on its
main loop (see :mod:`nginx_canary.daemon`).
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

from nginx_canary.errors import BadInputError, CanaryError, ControlError, DaemonNotRunningError, ExitCode

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: A peer gets this long to send its request; a silent one must not hold a server thread.
REQUEST_TIMEOUT = 5.0
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
    """Accepts connections on the control socket in a thread; ``handle(command, args)`` makes the answer.

    ``handle`` returns JSON data or raises a CanaryError (answered as an error
    with its exit code); anything else it raises is answered as an internal
    error and logged.
    """

    def __init__(self, path: str, handle: Handler, *, control_group: Optional[str] = None,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        """Raises ControlError for an unknown group."""
        self.path = path
        self.handle = handle
        self.control_gid = group_id(control_group)
        self.request_timeout = request_timeout
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._closing = threading.Event()
        self._inode: Optional[Tuple[int, int]] = None

    def start(self) -> None:
        """Bind the socket (directory and modes as documented) and start accepting.

        Raises ControlError: the directory is unsuitable, or another daemon is listening.
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
            listener.listen(16)
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot set up the control socket {self.path}: {exc.strerror}") from exc
        listener.settimeout(0.5)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and remove the socket file (only if it is still ours)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if self._closing.is_set():
                    return
                log.warning("control socket: accept failed: %s", exc)
                time.sleep(0.1)
                continue
            threading.Thread(target=self._serve_one, args=(conn,), name="control-conn", daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                peer = peer_of(conn)
            except OSError as exc:
                log.warning("control socket: cannot read the peer's credentials: %s", exc)
                return
            if not is_allowed(peer, os.geteuid(), self.control_gid):
                log.warning("control socket: refused pid %d uid %d gid %d (not root, the daemon's user or in "
                            "control_group)", peer.pid, peer.uid, peer.gid)
                # Take its request (never acted on) first: closing on an unread request resets the
                # connection, and the client would see "Broken pipe" instead of the refusal.
                conn.settimeout(min(self.request_timeout, 1.0))
                try:
                    _read_line(conn, MAX_REQUEST_BYTES)
                except (OSError, ControlError):
                    pass
                _send(conn, {"ok": False, "exit_code": int(ExitCode.BAD_INPUT),
                             "error": "permission denied: the control socket takes root, the daemon's user "
                                      "and members of control_group only"})
                return
            conn.settimeout(self.request_timeout)
            try:
                request = _read_line(conn, MAX_REQUEST_BYTES)
                command, args = _parse_request(request)
            except (OSError, ControlError) as exc:
                _send(conn, {"ok": False, "exit_code": int(ExitCode.BAD_INPUT), "error": f"bad request: {exc}"})
                return
            try:
                answer: Dict[str, Any] = {"ok": True, "result": self.handle(command, args)}
            except CanaryError as exc:
                answer = {"ok": False, "error": str(exc), "exit_code": int(exc.exit_code)}
            except Exception as exc:  # noqa: BLE001 - a bug must reach the client as one line, not kill the thread
                log.exception("control socket: %s failed", command)
                answer = {"ok": False, "error": f"internal error in the daemon: {exc!r}",
                          "exit_code": int(ExitCode.NGINX_REJECTED)}
            conn.settimeout(self.request_timeout)
            _send(conn, answer)


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
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(f"not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise ControlError('expected {"command": NAME, "args": {...}}')
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise ControlError("args must be an object")
    return request["command"], args


def _send(conn: socket.socket, answer: Dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(answer, sort_keys=True, allow_nan=False).encode("utf-8") + b"\n")
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
            conn.connect(path)
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


def _remote_error(message: str, code: Any) -> CanaryError:
    error = BadInputError(message) if code == ExitCode.BAD_INPUT else CanaryError(message)
    if isinstance(code, int) and code in iter(ExitCode):
        error.exit_code = ExitCode(code)
    return error
