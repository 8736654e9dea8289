"""Persisted rollout state and its append-only history. Stores; decides nothing.

Layout, under the state directory (0700)::

    rollouts/                    0700
    rollouts/NAME.json           0600  the current RolloutState, replaced atomically
    rollouts/NAME.history.jsonl  0600  one JSON object per line, appended

A history line is ``{"time", "event", "state", "step", "canary_percent",
"detail"}``. Appends take an flock on the file, use ``O_APPEND`` and fsync.
A crash can leave a torn last line (no trailing newline, or bytes that are not
JSON): readers skip it, and the next append first cuts a tail without newline
back to the last complete line, so a torn write never swallows the record after
it. Which transitions are allowed is the rollout engine's business.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from nginx_canary.domain import ACTIVE_STATES, TERMINAL_STATES, State, is_rollout_name, validate_name
from nginx_canary.errors import BadInputError, StateError
from nginx_canary.fsutil import append_lines, atomic_write
from nginx_canary.statedir import FILE_MODE, ROLLOUT_STATE_SUFFIX, StateDir

log = logging.getLogger(__name__)

#: Gates a run can wait at (settings: rollouts.NAME.gates).
GATES = ("pre_rollout", "confirm_step", "confirm_promotion")
#: Version of the state file layout; a file of another version is refused, not guessed at.
STATE_FORMAT = 1

#: Restores a terminal state can owe (``RolloutState.owed_restore``): the whole snapshot, or only its
#: weights on files someone else edited meanwhile.
RESTORE_KINDS = ("snapshot", "weights")
#: How the message of a terminal state that still owes its restore ends, by kind.
RESTORING_MESSAGE = {
    "snapshot": "; restoring the snapshot taken at start",
    "weights": "; restoring the weights of the snapshot taken at start, keeping the edits made outside nginx-canary",
}

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Keys added after format 1 was first written: a file without them is still format 1.
_OPTIONAL_KEYS = frozenset({"upstream", "gate", "owed_restore", "restore_summary", "step_interval"})
_STATE_VALUES = frozenset(s.value for s in State)


@dataclass
class RolloutState:
    """Where one rollout stands. Times are seconds since the epoch.

    ``steps`` are the canary percentages as strings ("10", "25", ...),
    ``step_index`` points into them; ``canary_percent`` is what the canary gets
    now (it differs from the step after a rollback). ``expected_files`` maps
    each nginx config file the rollout manages to the sha256 it should hold at
    this step, so that drift made by someone else can be noticed.
    ``last_verdict`` is a ``verdict.Verdict.to_dict()``. ``upstream`` names
    the upstream the run steers (None in files written before it was added),
    so that ``set-weight`` can refuse to touch it without the daemon's config.
    ``gate`` names the gate the run waits at (``pre_rollout``: its first step
    is not applied yet; ``confirm_step`` / ``confirm_promotion``: the bake
    time is over and the next step or the promotion waits for the gate).
    ``owed_restore`` is the restore a terminal state still owes while it
    holds a ``snapshot_id`` (one of :data:`RESTORE_KINDS`), ``restore_summary``
    the outcome it ends ("rolled back: ..."); ``step_interval`` the run's
    ``start --step-interval`` (None: the settings' bake time).

    Construction validates the fields (ValueError, naming the field); so does
    :meth:`StateStore.save`, for a state changed after construction.
    """

    name: str
    state: State = State.IDLE
    step_index: int = 0
    steps: Tuple[str, ...] = ()
    canary_percent: str = "0"
    snapshot_id: Optional[str] = None
    expected_files: Dict[str, str] = field(default_factory=dict)
    started_at: Optional[float] = None
    step_started_at: Optional[float] = None
    updated_at: Optional[float] = None
    paused_reason: Optional[str] = None
    last_verdict: Optional[Dict[str, Any]] = None
    failure_streak: int = 0
    message: str = ""
    upstream: Optional[str] = None
    gate: Optional[str] = None
    owed_restore: Optional[str] = None
    restore_summary: Optional[str] = None
    step_interval: Optional[float] = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, list):
            self.steps = tuple(self.steps)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field that does not hold what it should.

        A ``state`` given as its string becomes the :class:`State`.
        """
        try:
            validate_name(self.name)
        except BadInputError as exc:
            raise ValueError(str(exc)) from None
        if isinstance(self.state, str) and self.state in _STATE_VALUES:
            self.state = State(self.state)
        if not isinstance(self.state, State):
            raise ValueError(f"state must be one of {', '.join(State)}, not {self.state!r}")
        if not isinstance(self.steps, tuple) or not all(isinstance(s, str) and s for s in self.steps):
            raise ValueError(f"steps must be a tuple of percent strings, not {self.steps!r}")
        if not _is_count(self.step_index):
            raise ValueError(f"step_index must be a non-negative integer, not {self.step_index!r}")
        if self.steps and self.step_index >= len(self.steps):
            raise ValueError(f"step_index {self.step_index} is past the last of {len(self.steps)} steps")
        if not isinstance(self.canary_percent, str) or not self.canary_percent:
            raise ValueError(f"canary_percent must be a percent string, not {self.canary_percent!r}")
        for key in ("snapshot_id", "paused_reason", "restore_summary"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string or None, not {value!r}")
        if not isinstance(self.expected_files, dict) or not all(
            isinstance(path, str) and path and isinstance(sha, str) and _SHA256.fullmatch(sha)
            for path, sha in self.expected_files.items()
        ):
            raise ValueError("expected_files must map file paths to lowercase hex sha256 digests")
        for key in ("started_at", "step_started_at", "updated_at"):
            value = getattr(self, key)
            if value is not None and not _is_time(value):
                raise ValueError(f"{key} must be a finite number of seconds or None, not {value!r}")
        if self.last_verdict is not None and not isinstance(self.last_verdict, dict):
            raise ValueError(f"last_verdict must be an object or None, not {type(self.last_verdict).__name__}")
        if not _is_count(self.failure_streak):
            raise ValueError(f"failure_streak must be a non-negative integer, not {self.failure_streak!r}")
        if not isinstance(self.message, str):
            raise ValueError(f"message must be a string, not {self.message!r}")
        if self.upstream is not None and (not isinstance(self.upstream, str) or not self.upstream):
            raise ValueError(f"upstream must be a non-empty string or None, not {self.upstream!r}")
        if self.gate not in (None,) + GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)} or None, not {self.gate!r}")
        if self.owed_restore not in (None,) + RESTORE_KINDS:
            raise ValueError(f"owed_restore must be one of {', '.join(RESTORE_KINDS)} or None, "
                             f"not {self.owed_restore!r}")
        if self.step_interval is not None and not (_is_time(self.step_interval) and self.step_interval > 0):
            raise ValueError(f"step_interval must be a positive number of seconds or None, not {self.step_interval!r}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON data; independent copies of the containers."""
        return {
            "name": self.name,
            "state": self.state,
            "step_index": self.step_index,
            "steps": list(self.steps),
            "canary_percent": self.canary_percent,
            "snapshot_id": self.snapshot_id,
            "expected_files": dict(self.expected_files),
            "started_at": self.started_at,
            "step_started_at": self.step_started_at,
            "updated_at": self.updated_at,
            "paused_reason": self.paused_reason,
            "last_verdict": copy.deepcopy(self.last_verdict),
            "failure_streak": self.failure_streak,
            "message": self.message,
            "upstream": self.upstream,
            "gate": self.gate,
            "owed_restore": self.owed_restore,
            "restore_summary": self.restore_summary,
            "step_interval": self.step_interval,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "RolloutState":
        """The inverse of :meth:`to_dict`, strict: every key present, none unknown.

        Raises ValueError naming the missing, unknown or invalid keys.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a rollout state must be an object, not {type(data).__name__}")
        missing = [k for k in cls.__dataclass_fields__ if k not in data and k not in _OPTIONAL_KEYS]
        unknown = sorted(str(k) for k in data if k not in cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown keys {', '.join(map(repr, unknown))} (written by a newer nginx-canary?)"
            )
        if missing:
            raise ValueError(f"missing keys {', '.join(map(repr, missing))}")
        values = dict(data)
        if not isinstance(values["steps"], list):
            raise ValueError(f"steps must be a list, not {values['steps']!r}")
        values["steps"] = tuple(values["steps"])
        for key in ("started_at", "step_started_at", "updated_at", "step_interval"):
            if _is_time(values.get(key)):
                values[key] = float(values[key])
        if "owed_restore" not in values:
            values.update(_owed_restore_from_message(values))
        return cls(**values)


class StateStore:
    """Reads and writes rollout states and histories under ``state_dir``.

    ``clock`` stamps history records that are not given a time.
    """

    def __init__(self, state_dir: str, clock: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.paths = StateDir(state_dir)
        self.rollouts_dir = self.paths.rollouts
        self._clock = clock

    def state_path(self, name: str) -> str:
        """Raises BadInputError for an invalid name."""
        return self.paths.rollout_state(name)

    def history_path(self, name: str) -> str:
        """Raises BadInputError for an invalid name."""
        return self.paths.history(name)

    # -- state ------------------------------------------------------------------

    def save(self, state: RolloutState) -> None:
        """Replace the saved state of ``state.name`` atomically (mode 0600).

        Raises:
            ValueError: the state is invalid or not JSON-serialisable (a bug in the caller).
            StateError: the file cannot be written.
        """
        state.validate()
        path = self.state_path(state.name)
        record = {"format": STATE_FORMAT, **state.to_dict()}
        try:
            data = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"rollout {state.name!r}: state is not JSON-serialisable: {exc}") from exc
        self.paths.ensure_rollouts()
        atomic_write(path, data.encode("utf-8"), mode=FILE_MODE)

    def load(self, name: str) -> Optional[RolloutState]:
        """The saved state of rollout ``name``; None if it has none.

        Raises:
            BadInputError: the name is invalid.
            StateError: the file cannot be read or does not hold a valid state (the message names it).
        """
        path = self.state_path(name)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read rollout state: {exc.strerror or exc}", file=path) from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise StateError(f"corrupt rollout state: not UTF-8 ({exc.reason})", file=path) from exc
        except json.JSONDecodeError as exc:
            raise StateError(f"corrupt rollout state: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno) from exc
        if not isinstance(data, dict):
            raise StateError(f"corrupt rollout state: a JSON {type(data).__name__}, not an object", file=path)
        version = data.pop("format", None)
        if version != STATE_FORMAT:
            raise StateError(
                f"rollout state of format {version!r}, this nginx-canary reads format {STATE_FORMAT}", file=path
            )
        try:
            state = RolloutState.from_dict(data)
        except ValueError as exc:
            raise StateError(f"invalid rollout state: {exc}", file=path) from exc
        if state.name != name:
            raise StateError(f"holds rollout {state.name!r}, expected {name!r}", file=path)
        if "step_interval" not in data and state.state in ACTIVE_STATES:
            state.step_interval = self._step_interval_from_history(name)
        return state

    def _step_interval_from_history(self, name: str) -> Optional[float]:
        """A run's ``--step-interval`` from its "start" record, for a state file written before it was kept there."""
        try:
            records = self.history(name)
        except StateError as exc:
            log.warning("rollout %s: cannot read the history for this run's step interval: %s", name, exc)
            return None
        for record in reversed(records):
            if record.get("event") == "start":
                value = (record.get("detail") or {}).get("step_interval")
                return float(value) if _is_time(value) and value > 0 else None
        return None

    def names(self) -> List[str]:
        """The names of the saved rollouts, sorted.

        Raises StateError when the directory cannot be listed.
        """
        try:
            entries = os.listdir(self.rollouts_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot list {self.rollouts_dir}: {exc.strerror or exc}") from exc
        found = []
        for entry in entries:
            # Skips histories (".jsonl") and atomic_write's temporary files (hidden, ".tmp").
            if entry.endswith(ROLLOUT_STATE_SUFFIX):
                stem = entry[: -len(ROLLOUT_STATE_SUFFIX)]
                if is_rollout_name(stem):
                    found.append(stem)
        return sorted(found)

    def load_all(self) -> List[RolloutState]:
        """Every saved rollout state, by name.

        Raises StateError for the first one that cannot be read (naming its file).
        """
        states = []
        for name in self.names():
            state = self.load(name)
            if state is not None:  # removed since the listing
                states.append(state)
        return states

    # -- history --------------------------------------------------------------------

    def append_history(
        self,
        name: str,
        event: str,
        *,
        rollout: Optional[RolloutState] = None,
        at: Optional[float] = None,
        **detail: Any,
    ) -> Dict[str, Any]:
        """Append one record to rollout ``name``'s history and make it durable; returns the record.

        ``state``, ``step`` and ``canary_percent`` come from ``rollout`` (None
        without it); ``time`` is ``at`` or the store's clock. ``detail`` values
        must be JSON-serialisable; objects with a ``to_dict()`` method (a
        ``Verdict``) are stored as its result.

        Raises:
            BadInputError: the name is invalid.
            ValueError: the event is empty or the detail cannot be serialised (nothing is written).
            StateError: the history file cannot be written.
        """
        path = self.history_path(name)
        if not isinstance(event, str) or not event:
            raise ValueError(f"event must be a non-empty string, not {event!r}")
        record = {
            "time": self._clock() if at is None else at,
            "event": event,
            "state": None if rollout is None else rollout.state,
            "step": None if rollout is None else rollout.step_index,
            "canary_percent": None if rollout is None else rollout.canary_percent,
            "detail": detail,
        }
        try:
            line = json.dumps(record, sort_keys=True, allow_nan=False, default=_to_json) + "\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"history record {event!r} of rollout {name!r} is not JSON-serialisable: {exc}") from exc
        self.paths.ensure_rollouts()
        append_lines(path, line.encode("utf-8"), what="history", sync=True, fault="history_append")
        stored: Dict[str, Any] = json.loads(line)
        return stored

    def history(self, name: str, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Rollout ``name``'s history records, oldest first; the last ``limit`` of them if given.

        Lines that are not complete JSON objects (a torn write after a crash)
        are skipped with a warning. Memory is bounded by ``limit``.

        Raises:
            BadInputError: the name is invalid.
            ValueError: limit is negative.
            StateError: the file cannot be read.
        """
        path = self.history_path(name)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")
        records: Deque[Dict[str, Any]] = collections.deque(maxlen=limit)
        skipped = 0
        try:
            with open(path, "rb") as fh:
                for number, raw in enumerate(fh, 1):
                    record = _parse_line(raw)
                    if record is None:
                        skipped += 1
                        log.warning("%s:%d: skipped a torn or corrupt history line", path, number)
                    else:
                        records.append(record)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot read history: {exc.strerror or exc}", file=path) from exc
        return list(records)


def _parse_line(raw: bytes) -> Optional[Dict[str, Any]]:
    """The record on one history line, or None for a torn or corrupt one."""
    if not raw.endswith(b"\n"):
        return None  # never completed: the writer's newline is part of the same write
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _owed_restore_from_message(values: Dict[str, Any]) -> Dict[str, Any]:
    """``owed_restore`` and ``restore_summary`` of a state file written before they were kept as fields.

    Such a file says it in its message alone: "<summary>; restoring the ...".
    """
    if values.get("state") not in TERMINAL_STATES or values.get("snapshot_id") is None:
        return {}
    message = values.get("message")
    if not isinstance(message, str):
        return {}
    kind = "weights" if RESTORING_MESSAGE["weights"] in message else "snapshot"
    summary = message.partition(RESTORING_MESSAGE[kind])[0]
    return {"owed_restore": kind, "restore_summary": summary or None}


def _to_json(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
