"""The operations tests run on both brokers, as the HTTP tests do, against real subscribers."""

from collections.abc import Iterator

import pytest

from tests.http.conftest import broker_url  # noqa: F401  (a fixture, re-exported for this package)
from tests.support.subscriber import Subscriber, running_subscriber


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    with running_subscriber() as sub:
        yield sub
