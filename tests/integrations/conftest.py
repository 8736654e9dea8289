"""Fixtures of the integration tests: HTTP receivers on loopback for webhooks, gates and HTTP checks; a
DaemonMetrics and its served endpoint for the metrics tests."""

from __future__ import annotations

from typing import Any, Iterator, List

import pytest

from nginx_canary.integrations.metrics import DaemonMetrics
from nginx_canary.integrations.metrics_server import MetricsServer
from tests.integrations.test_webhooks import Receiver


@pytest.fixture
def receivers() -> Iterator[Any]:
    """Make more receivers; all are shut down at teardown."""
    made: List[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def metrics() -> DaemonMetrics:
    return DaemonMetrics()


@pytest.fixture
def served(metrics: DaemonMetrics) -> Iterator[MetricsServer]:
    server = metrics.serve("127.0.0.1:0")
    yield server
    server.close()
