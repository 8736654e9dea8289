"""Fixtures of the integration tests: HTTP receivers on loopback for webhooks, gates and HTTP checks."""

from __future__ import annotations

from typing import Any, Iterator, List

import pytest

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
