"""The store contract runs against SQLite (a temporary file) and PostgreSQL (the shared `test`
database: every test writes ids of its own and asserts only on the rows it wrote). A test that
must see a whole table (replay jobs are claimed from all of them) gets a database of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from hookhub.store import SqlStore
from hookhub.store.engine import engine_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_sqlite_url: str) -> AsyncIterator[SqlStore]:
    url = tmp_sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlStore(url)
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def private_url(request: pytest.FixtureRequest, tmp_sqlite_url: str) -> str:
    """A database no other test writes to."""
    return tmp_sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
async def private_store(private_url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore(private_url)
    await store.start()
    yield store
    await store.close()
