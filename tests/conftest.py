"""Fixtures for the real services the tests talk to.

RabbitMQ and PostgreSQL tests skip with a one-line reason on a machine without those servers,
and fail instead under CI=true, where an unreachable server is a broken run, not a choice.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from hookhub.store import SqlStore
from hookhub.store.engine import engine_url

RABBITMQ_URL = os.environ.get("HOOKHUB_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")
POSTGRES_URL = os.environ.get("HOOKHUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip (or, under CI=true, fail) when the service behind `url` is unreachable."""
    if _reachable(url):
        return
    reason = f"{name} not reachable at {urlparse(url).hostname}:{urlparse(url).port}"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: service tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    require_service("RabbitMQ", RABBITMQ_URL)
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_service("PostgreSQL", POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def namespace() -> str:
    """A fresh topology namespace so tests never see each other's queues."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tmp_sqlite_url(tmp_path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/hookhub.db"


@pytest.fixture(autouse=True, scope="session")
def _no_files_in_the_checkout() -> Iterator[None]:
    """Tests write under tmp_path only: a hub started on a default (`./var/...`) fails the run."""
    var = Path(__file__).resolve().parent.parent / "var"
    existed = var.exists()
    yield
    assert existed or not var.exists(), f"a test wrote {var}: give its hub paths under tmp_path"


@pytest.fixture
async def store(tmp_sqlite_url: str) -> AsyncIterator[SqlStore]:
    """A started SQLite store in tmp_path (tests/store/ runs its own over PostgreSQL too)."""
    store = SqlStore(tmp_sqlite_url)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database, dropped afterwards."""
    name = f"hookhub_{uuid.uuid4().hex[:12]}"
    admin = create_engine(engine_url(postgres_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()
