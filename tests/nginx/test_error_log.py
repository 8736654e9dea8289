"""Which error-log lines fail a reload: nginx's own prefix from the processes that matter, never client text."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginx_canary.nginx.error_log import ReloadWitness, first_failure, size_of

MASTER, OLD_WORKER, NEW_WORKER = 100, 101, 202
WITNESS = ReloadWitness(MASTER, frozenset({OLD_WORKER}))
STAMP = "2026/12/03 07:42:09"


def line(level: str, pid: int, text: str) -> bytes:
    return f"{STAMP} [{level}] {pid}#{pid}: {text}\n".encode()


# What a client can make nginx write: its request line, Host and Referer, in [error] lines of any worker.
CLIENT_LINES = [
    line("error", NEW_WORKER, 'client intended to send too large body: 2097152 bytes, client: 127.0.0.1, '
                              'server: , request: "POST /[emerg] HTTP/1.1", host: "[alert]"'),
    line("error", OLD_WORKER, 'open() "/srv/[emerg]" failed (2: No such file or directory), client: 127.0.0.1, '
                              'request: "GET /[emerg] HTTP/1.1", referrer: "[alert] 1#1: "'),
    # A forged line start behind characters Python's splitlines() splits on, and nginx does not.
    line("error", NEW_WORKER, f'request: "GET /x\x0b{STAMP} [emerg] {MASTER}#{MASTER}: bind() failed HTTP/1.1"'),
    line("error", NEW_WORKER, f'request: "GET /x\x1c{STAMP} [emerg] {MASTER}#{MASTER}: x\u2028{STAMP} [emerg] '
                              f'{MASTER}#{MASTER}: y"'),
    line("info", MASTER, 'client sent invalid host header "[emerg]" while reading client request headers'),
]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "error.log"
    path.write_bytes(line("notice", MASTER, "start worker processes"))
    return path


def append(path: Path, *data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(data))


def test_client_text_never_fails_a_reload(log: Path) -> None:
    offset = size_of(str(log))
    append(log, *CLIENT_LINES)
    assert first_failure(str(log), offset, WITNESS) is None


def test_the_masters_emerg_and_alert_fail_it(log: Path) -> None:
    for level in ("emerg", "alert"):
        offset = size_of(str(log))
        append(log, *CLIENT_LINES, line(level, MASTER, "bind() to 127.0.0.1:80 failed (98: Address in use)"))
        found = first_failure(str(log), offset, WITNESS)
        assert found == f"{STAMP} [{level}] {MASTER}#{MASTER}: bind() to 127.0.0.1:80 failed (98: Address in use)"


def test_a_new_process_fails_it_only_at_emerg(log: Path) -> None:
    offset = size_of(str(log))
    append(log, line("alert", NEW_WORKER, "1024 worker_connections are not enough"),
           line("alert", OLD_WORKER, "open socket #12 left in connection 3"),
           line("emerg", OLD_WORKER, "old worker going away"))
    assert first_failure(str(log), offset, WITNESS) is None
    append(log, line("emerg", NEW_WORKER, "setuid(65534) failed (1: Operation not permitted)"))
    assert "setuid(65534) failed" in (first_failure(str(log), offset, WITNESS) or "")


def test_lines_before_the_offset_do_not_count(log: Path) -> None:
    append(log, line("emerg", MASTER, "an old failure"))
    assert first_failure(str(log), size_of(str(log)), WITNESS) is None


def test_an_offset_inside_a_line_skips_that_lines_tail(log: Path) -> None:
    # The tail of a client line that happens to look like a line start must not count.
    forged = f"{STAMP} [emerg] {MASTER}#{MASTER}: forged"
    append(log, f'{STAMP} [error] {NEW_WORKER}#{NEW_WORKER}: request: "{forged}"\n'.encode())
    offset = log.read_bytes().rindex(forged.encode())
    assert first_failure(str(log), offset, WITNESS) is None
    # At a line boundary the same text (written by the master) counts.
    offset = size_of(str(log))
    append(log, (forged + "\n").encode())
    assert first_failure(str(log), offset, WITNESS) == forged


def test_a_rotated_log_is_read_from_its_start(log: Path) -> None:
    offset = size_of(str(log)) + 10_000
    append(log, line("emerg", MASTER, "after rotation"))
    assert "after rotation" in (first_failure(str(log), offset, WITNESS) or "")


def test_control_characters_in_a_failure_are_escaped(log: Path) -> None:
    offset = size_of(str(log))
    append(log, line("emerg", MASTER, 'open() "/etc/nginx/\x1b]0;owned\x07\x1b[2J.conf" failed'))
    found = first_failure(str(log), offset, WITNESS)
    assert found is not None and "\x1b" not in found and "\x07" not in found
    assert '"/etc/nginx/\\x1b]0;owned\\x07\\x1b[2J.conf"' in found


def test_missing_or_unreadable_log_has_no_failure(tmp_path: Path) -> None:
    assert first_failure(None, 0, WITNESS) is None
    assert first_failure(str(tmp_path / "missing.log"), 0, WITNESS) is None
    assert size_of(str(tmp_path / "missing.log")) == 0 and size_of(None) == 0
