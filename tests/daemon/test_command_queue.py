"""Commands queued by control-socket threads for the loop (daemon/command_queue.py)."""

from __future__ import annotations

import threading
from typing import Any, Dict, List

import pytest

from nginx_canary.daemon.command_queue import CommandQueue
from nginx_canary.errors import BadInputError, ControlError


def _submit_in_thread(commands: CommandQueue, name: str, answers: Dict[str, Any]) -> threading.Thread:
    def client() -> None:
        try:
            answers[name] = commands.submit(name, {"name": "app"})
        except Exception as exc:  # noqa: BLE001 - the test looks at what the client got
            answers[name] = exc

    thread = threading.Thread(target=client)
    thread.start()
    return thread


def _wait_queued(commands: CommandQueue, thread: threading.Thread) -> None:
    for _ in range(500):
        if not commands.empty():
            return
        thread.join(0.01)
    raise AssertionError("the command was never queued")


def test_a_command_runs_on_the_loop_and_its_answer_goes_back():
    woken: List[bool] = []
    commands = CommandQueue(lambda: woken.append(True))
    answers: Dict[str, Any] = {}
    thread = _submit_in_thread(commands, "status", answers)
    _wait_queued(commands, thread)
    assert woken == [True]
    commands.run(lambda command, args: {"ran": command, "args": args})
    thread.join(10)
    assert answers["status"] == {"ran": "status", "args": {"name": "app"}}
    assert commands.empty()


def test_an_error_travels_back_to_its_client():
    commands = CommandQueue(lambda: None)
    answers: Dict[str, Any] = {}
    thread = _submit_in_thread(commands, "pause", answers)
    _wait_queued(commands, thread)

    def refuse(command: str, args: Dict[str, Any]) -> Any:
        raise BadInputError("rollout 'app' is idle, only a progressing rollout can be paused")

    commands.run(refuse)
    thread.join(10)
    assert isinstance(answers["pause"], BadInputError)


def test_queued_commands_are_failed_when_the_daemon_stops_and_new_ones_refused():
    commands = CommandQueue(lambda: None)
    answers: Dict[str, Any] = {}
    thread = _submit_in_thread(commands, "abort", answers)
    _wait_queued(commands, thread)
    commands.closed = True
    commands.fail_all("the daemon is stopping")
    thread.join(10)
    assert isinstance(answers["abort"], ControlError) and str(answers["abort"]) == "the daemon is stopping"
    with pytest.raises(ControlError, match="the daemon is stopping"):
        commands.submit("status", {})
