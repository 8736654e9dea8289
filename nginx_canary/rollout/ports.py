"""What the rollout state machine needs from the outside: the config engine, the traffic, gates and checks.

The daemon wires the real ones (rollout/applier.py, logs/live.py,
integrations/gates.py); tests pass fakes.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Dict, Optional, Protocol, Sequence, Tuple

from nginx_canary.logs.window import Stats
from nginx_canary.rollout.checks import Check


class SplitApplier(Protocol):
    """Changes one rollout's upstream through the config engine (the real one wraps operations/transaction).

    Every method returning hashes maps the same set of paths (the files that
    hold the upstream's ``server`` lines) to the lowercase hex sha256 of their
    bytes. ``apply`` and ``restore`` must be transactions: on any failure they
    leave the files as they were before the call, and nginx serving them.
    """

    def begin(self, rollout_name: str) -> str:
        """Snapshot the upstream's files as they are now; return the snapshot id. Raises CanaryError."""

    def plan(self, percent: Fraction) -> Dict[str, str]:
        """The hashes ``apply(percent)`` would leave, from the files as they are now; writes nothing.

        Must be deterministic (same bytes and percent, same result), and equal
        to ``files_now()`` when the files already give the canary ``percent``.
        Raises CanaryError (BadInputError, ConfigError) when no such split can be made.
        """

    def apply(self, percent: Fraction) -> Dict[str, str]:
        """Give the canary ``percent`` % of the traffic: plan, write, nginx -t, reload, verify.

        Returns the hashes of the files as now written (unchanged files
        included). Raises a CanaryError (NginxRejectedError, ConfigError,
        NginxNotRunningError, BusyError, ...) after putting the files back.
        """

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        """Put the snapshot back byte for byte, reload, verify; return the restored hashes. Raises CanaryError."""

    def restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        """Give the upstream's servers the snapshot's weights on the files as they are now (other bytes kept).

        Reload and verify like ``restore``; return the hashes. Raises CanaryError.
        """

    def plan_restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        """The hashes ``restore_weights`` would leave; writes nothing. Raises CanaryError."""

    def snapshot_files(self, snapshot_id: str) -> Dict[str, str]:
        """The hashes of the files held by the snapshot. Raises StateError for an unknown or damaged snapshot."""

    def files_now(self) -> Dict[str, str]:
        """The hashes of the files as they are on disk now. Raises CanaryError when one cannot be read."""

    def hashes_of(self, paths: Sequence[str]) -> Dict[str, str]:
        """The hashes of these files now, cheaply (no config parse); "" for one that cannot be read. Never raises."""


class TrafficSource(Protocol):
    """What nginx logged for one rollout's upstream: the evidence of the step under way."""

    def begin_step(self, at: float) -> None:
        """Evidence for the step that took effect at ``at`` starts empty: requests stamped before it do not count."""

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        """``(canary, stable)``: every request since the last :meth:`begin_step`, up to ``now`` (copies)."""


#: ``gates(name, now)`` -> ``(state, reason)`` or None (gate not configured); never blocks.
GateSource = Callable[[str, float], Optional[Tuple[str, str]]]
#: ``log_trouble()`` -> why the traffic cannot be read (the access log mostly fails to parse) or None; never blocks.
LogTrouble = Callable[[], Optional[str]]
#: ``extra_checks(now)`` -> checks to run with the analysis ones; never blocks.
ExtraChecks = Callable[[float], Tuple[Check, ...]]
GATE_OPEN = "open"
