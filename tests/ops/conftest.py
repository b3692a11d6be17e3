"""The operations tests run on both brokers, as the HTTP tests do."""

from tests.http.conftest import broker_url  # noqa: F401  (a fixture, re-exported for this package)
