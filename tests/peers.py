"""Real unprivileged peers: a forked child dropped to another uid/gid (access control and file-trust tests)."""

from __future__ import annotations

import json
import os
import socket
from typing import Callable, List, Optional, Tuple


def call_as(uid: int, gid: int, path: str, request: dict, groups: Optional[List[int]] = None) -> Tuple[int, bytes]:
    """Fork, drop to uid/gid (and supplementary groups), send one request; the child's exit status and answer.

    Exit 13: the kernel refused the connection (EACCES).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups(groups or [])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(30)
                conn.connect(path)
                try:
                    conn.sendall(json.dumps(request).encode() + b"\n")
                except BrokenPipeError:
                    pass  # a refused peer may be answered and cut off before its request is read: read the answer

                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                os.write(write_end, data)
            os._exit(0)
        except PermissionError:
            os._exit(13)
        except BaseException as exc:
            os.write(write_end, repr(exc).encode())
            os._exit(1)
    return _child_result(pid, read_end, write_end)


def run_as(uid: int, gid: int, action: Callable[[], object], groups: Optional[List[int]] = None) -> Tuple[int, str]:
    """Fork, drop to uid/gid (and supplementary groups), run ``action``; the child's exit status and error text.

    Exit 0: ``action`` returned. Exit 13: it raised PermissionError. Exit 1: anything else (its repr is the text).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups(groups or [])
            os.setgid(gid)
            os.setuid(uid)
            action()
            code = 0
        except PermissionError as exc:
            os.write(write_end, repr(exc).encode())
            code = 13
        except BaseException as exc:
            os.write(write_end, repr(exc).encode())
        finally:
            os._exit(code)
    code, data = _child_result(pid, read_end, write_end)
    return code, data.decode(errors="replace")


def _child_result(pid: int, read_end: int, write_end: int) -> Tuple[int, bytes]:
    """What a forked child wrote to its pipe, and its exit status, once it is gone."""
    os.close(write_end)
    data = b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), data


def trickle(sock: socket.socket, payload: bytes, done: Callable[[bytes], bool]) -> bytes:
    """Send ``payload`` a byte every 0.1 s (reading between bytes) until ``done(reply)``, the end, or a closed socket."""
    sock.settimeout(0.1)
    reply = b""
    for byte in payload:
        try:
            sock.send(bytes([byte]))
            reply += sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if done(reply):
            break
    return reply
