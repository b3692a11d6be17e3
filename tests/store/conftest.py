"""The store contract runs against SQLite (a temporary file) and PostgreSQL (the shared `test`
database: every test writes ids of its own and asserts only on the rows it wrote). A test that
must see a whole table (replay jobs are claimed from all of them) gets a database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hookhub.store import SqlStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_sqlite_url: str) -> AsyncIterator[SqlStore]:
    url = tmp_sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlStore(url)
    await store.start()
    yield store
    await store.close()


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
