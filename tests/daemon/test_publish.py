"""systemd's STATUS= line and the metrics' pace (daemon/publish.py)."""

from __future__ import annotations

from types import SimpleNamespace

from nginx_canary.daemon.publish import METRICS_EVERY, Publisher, summary
from nginx_canary.daemon.sd_notify import Notifier
from nginx_canary.domain import State
from nginx_canary.rollout.store import RolloutState


def _runtime(state: RolloutState) -> SimpleNamespace:
    return SimpleNamespace(rollout=SimpleNamespace(state=state))


def test_the_status_line_names_each_rollout_and_the_share_of_an_active_one():
    progressing = RolloutState(name="app", state=State.PROGRESSING, steps=("10", "25", "50"), step_index=1,
                               canary_percent="25")
    done = RolloutState(name="api", state=State.ROLLED_BACK, steps=("10",))
    assert summary({"app": _runtime(progressing), "api": _runtime(done)}) == \
        "app: progressing 25 % (step 2/3); api: rolled_back"  # type: ignore[dict-item]
    assert summary({}) == "no rollouts configured"


class CountingMetrics:
    def __init__(self) -> None:
        self.updates = 0

    def update_rollout(self, name: str, **figures: object) -> None:
        self.updates += 1

    def set_log_lines(self, parsed: int, unparsed: int, source: str) -> None:
        pass


def test_metrics_get_fresh_figures_at_most_once_per_interval():
    metrics = CountingMetrics()
    publisher = Publisher(Notifier(environ={}), metrics)  # type: ignore[arg-type]
    traffic = SimpleNamespace(windows=SimpleNamespace(cumulative=lambda group: None),
                              analyzer=SimpleNamespace(lines=10, unparsed=1))
    state = RolloutState(name="app", state=State.PROGRESSING, steps=("10",), canary_percent="10")
    runtimes = {"app": SimpleNamespace(rollout=SimpleNamespace(state=state),
                                       traffic=SimpleNamespace(traffic=traffic))}
    publisher.turn(100.0, runtimes)  # type: ignore[arg-type]
    publisher.turn(100.0 + METRICS_EVERY / 2, runtimes)  # type: ignore[arg-type]
    assert metrics.updates == 1
    publisher.turn(100.0 + METRICS_EVERY, runtimes)  # type: ignore[arg-type]
    assert metrics.updates == 2
