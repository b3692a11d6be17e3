"""A database created by the release before issue 7 gains the new column and indexes in place,
keeping its rows."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from hookhub.store import SqlStore, SubscriptionState
from hookhub.store.engine import engine_url
from tests.store.factories import ingest

OLD_TABLES = [
    "CREATE TABLE subscription_states (name VARCHAR(255) NOT NULL PRIMARY KEY,"
    " state VARCHAR(16) NOT NULL, reason TEXT NOT NULL, updated_at FLOAT NOT NULL)",
    "CREATE TABLE ingest_records (source VARCHAR(255) NOT NULL, event_id VARCHAR(255) NOT NULL,"
    " type VARCHAR(255) NOT NULL, origin VARCHAR(255) NOT NULL, correlation_id VARCHAR(255) NOT NULL,"
    " received_at FLOAT NOT NULL, status VARCHAR(16) NOT NULL, claimed_at FLOAT NOT NULL,"
    " PRIMARY KEY (source, event_id))",
    "CREATE INDEX ix_ingest_records_correlation_id ON ingest_records (correlation_id)",
    "INSERT INTO subscription_states VALUES ('crm', 'paused', 'maintenance', 10.0)",
    "INSERT INTO ingest_records VALUES ('/s', 'e1', 't', 'o', 'c', 5.0, 'accepted', 5.0)",
]


def inspected(url: str) -> tuple[set[str], set[str]]:
    """subscription_states' columns and ingest_records' index names."""
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            columns = {c["name"] for c in inspector.get_columns("subscription_states")}
            indexes = {i["name"] or "" for i in inspector.get_indexes("ingest_records")}
        return columns, indexes
    finally:
        engine.dispose()


async def test_an_old_database_gains_the_new_column_and_indexes(private_url: str) -> None:
    engine = create_engine(engine_url(private_url))
    try:
        with engine.begin() as conn:
            for statement in OLD_TABLES:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    columns, indexes = inspected(private_url)
    assert "failing_since" not in columns and "ix_ingest_records_event_id" not in indexes
    store = SqlStore(private_url)
    try:
        await store.start()
        columns, indexes = inspected(private_url)
        assert "failing_since" in columns
        assert {"ix_ingest_records_event_id", "ix_ingest_records_received_at"} <= indexes
        old = (await store.subscriptions.records())["crm"]
        assert (old.state, old.reason, old.failing_since) == (SubscriptionState.PAUSED, "maintenance", None)
        await store.subscriptions.set_failing("crm", 42.0)
        assert (await store.subscriptions.records())["crm"].failing_since == 42.0
        assert [r.source for r in await store.claims.by_event_id("e1")] == ["/s"]
        await store.claims.claim([ingest("e1", source="/t")])
        assert len(await store.claims.by_event_id("e1")) == 2
        await store.catalog.list()  # the new tables exist
        await store.start()  # an upgraded database upgrades to itself
    finally:
        await store.close()
