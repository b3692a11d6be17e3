"""How the store fails: a refused record fails only its own caller; a dead database is
reported quickly, without piling up threads; an old schema is upgraded in place."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from hookhub.store import ClaimResult, SqlStore, StoreRejected, StoreUnavailable
from hookhub.store.engine import CONNECT_TIMEOUT, engine_url
from hookhub.store.schema import dead_letters, ingest_records
from tests.store.factories import attempt, ingest, letter, uid

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"  # nothing listens: refused at once


def refused_values(store: SqlStore) -> list[str]:
    """Values the database refuses. A lone surrogate cannot be encoded for either; PostgreSQL
    also refuses a NUL character and a value longer than its column (SQLite stores both)."""
    values = ["lone \ud800 surrogate"]
    if store.db.postgres:
        values += ["nul \x00 char", "x" * 300]
    return values


@contextmanager
def holding_row(store: SqlStore, table: Any, row: dict[str, Any]) -> Iterator[None]:
    """Another connection inserts `row` and keeps its transaction open: a writer batch touching
    the same key (PostgreSQL) or any row (SQLite's file lock) waits until the block exits, so
    the callers that arrive meanwhile queue up and share the writer's next batch."""
    engine = create_engine(engine_url(store.url))
    try:
        with engine.connect() as conn:
            tx = conn.begin()
            conn.execute(insert(table).values(row))
            yield
            tx.rollback()
    finally:
        engine.dispose()


async def test_a_refused_claim_fails_only_its_caller(store: SqlStore) -> None:
    plug = ingest()
    good = [ingest() for _ in range(20)]
    bad = [ingest(type=value) for value in refused_values(store)]
    callers = [plug, *good[:10], *bad, *good[10:]]
    writer = store.claims.writer.committer
    row = {**{k: getattr(plug, k) for k in ("source", "event_id", "type", "origin", "correlation_id")}}
    row.update(received_at=plug.received_at, status="pending", claimed_at=time.time())
    with holding_row(store, ingest_records, row):
        batches_before = writer.batches
        calls = asyncio.gather(*[store.claims.claim([r]) for r in callers], return_exceptions=True)
        await asyncio.sleep(0.3)  # the plug's batch waits on the held row; everyone else queues
    results = await calls
    # one or two batches (the plug's, with whoever was queued by then; then the rest): with the
    # refused callers in the middle of the list, each shared a batch with good ones
    assert writer.batches - batches_before <= 2
    by_record = dict(zip((r.event_id for r in callers), results, strict=True))
    assert all(by_record[r.event_id] == [ClaimResult.NEW] for r in [plug, *good])
    for r in bad:
        assert isinstance(by_record[r.event_id], StoreRejected), by_record[r.event_id]
        assert await store.claims.record(r.key) is None  # nothing of the refused caller was kept
    assert None not in [await store.claims.record(r.key) for r in good]


async def test_a_refused_attempt_fails_only_its_caller(store: SqlStore) -> None:
    event_id = uid("evt")
    plug = attempt(event_id=event_id)
    good = [attempt(event_id=event_id) for _ in range(20)]
    dying = good[3]
    bad = [attempt(event_id=event_id, subscription=value) for value in refused_values(store)]
    callers = [plug, *good[:10], *bad, *good[10:]]
    writer = store.attempts.writer.committer
    held = letter(plug)
    row = {**{k: getattr(held, k) for k in ("delivery_id", "subscription", "source", "event_id")}}
    row.update(event_type="t", correlation_id="c", attributes="{}", data=b"", attempts=1, dead_at=0.0)
    with holding_row(store, dead_letters, row):
        batches_before = writer.batches
        calls = asyncio.gather(
            store.attempts.record(plug, held),
            *[store.attempts.record(a, letter(a) if a is dying else None) for a in callers[1:]],
            return_exceptions=True,
        )
        await asyncio.sleep(0.3)
    results = await calls
    assert writer.batches - batches_before <= 2
    by_delivery = dict(zip((a.delivery_id for a in callers), results, strict=True))
    assert all(by_delivery[a.delivery_id] is None for a in [plug, *good])
    assert [type(by_delivery[a.delivery_id]) for a in bad] == [StoreRejected] * len(bad), by_delivery
    logged = {a.delivery_id for a in await store.attempts.for_event("/providers/test", event_id)}
    assert logged == {a.delivery_id for a in [plug, *good]}
    assert {d.delivery_id for d in await store.attempts.dead_letters("crm", limit=10_000)} >= {
        plug.delivery_id,
        dying.delivery_id,
    }


async def test_a_refused_read_is_rejected_not_unavailable(store: SqlStore) -> None:
    with pytest.raises(StoreRejected):
        await store.claims.record(("/providers/test", "lone \ud800"))


# A dead database ------------------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[tuple[str, list[socket.socket]]]:
    """A PostgreSQL URL whose server accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"postgresql://nobody@127.0.0.1:{server.getsockname()[1]}/none", accepted
    server.close()
    for conn in accepted:
        conn.close()


async def test_pings_share_one_bounded_check(black_hole: tuple[str, list[socket.socket]]) -> None:
    url, accepted = black_hole
    store = SqlStore(url, ping_timeout=0.5)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*[store.ping() for _ in range(50)])
        assert results == [False] * 50
        assert time.monotonic() - started < 1.5  # each caller waits at most the ping timeout
        assert len(accepted) == 1  # one check, one connection, for all fifty
        # the check is still hanging (connect timeout): later probes join it instead of adding threads
        assert await asyncio.gather(*[store.ping() for _ in range(10)]) == [False] * 10
        assert len(accepted) == 1
    finally:
        await store.close()


async def test_a_silent_server_fails_start_within_the_connect_timeout(
    black_hole: tuple[str, list[socket.socket]],
) -> None:
    url, accepted = black_hole
    store = SqlStore(url)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*[store.start() for _ in range(10)], return_exceptions=True)
        assert [type(r) for r in results] == [StoreUnavailable] * 10
        assert time.monotonic() - started < CONNECT_TIMEOUT + 2
        assert len(accepted) == 1  # concurrent starts (readiness probes) share one attempt
    finally:
        await store.close()


async def test_ping_answers_true_while_the_database_does(store: SqlStore) -> None:
    assert await asyncio.gather(*[store.ping() for _ in range(5)]) == [True] * 5
    assert await store.ping() is True  # a finished check is not reused: a new one runs


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    store = SqlStore(UNREACHABLE)
    try:
        assert await store.ping() is False
        with pytest.raises(StoreUnavailable):
            await store.start()
        with pytest.raises(StoreUnavailable):
            await store.claims.claim([ingest()])
        with pytest.raises(StoreUnavailable):
            await store.attempts.record(attempt())
        with pytest.raises(StoreUnavailable):
            await store.attempts.delivery_state("msg_x")
        with pytest.raises(StoreUnavailable):
            await store.subscriptions.all()
    finally:
        await store.close()


async def test_a_closed_store_reports_unavailable(store: SqlStore) -> None:
    other = SqlStore(store.url)
    await other.close()
    with pytest.raises(StoreUnavailable):
        await other.attempts.record(attempt())
    with pytest.raises(StoreUnavailable):
        await other.claims.claim([ingest()])
    assert await other.ping() is False


# An older schema ------------------------------------------------------------------------------


async def test_an_attempt_log_with_outcome_is_upgraded(tmp_path: Any) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE delivery_attempts (id INTEGER PRIMARY KEY, delivery_id VARCHAR(64) NOT NULL,"
            " subscription VARCHAR(255) NOT NULL, source VARCHAR(255) NOT NULL,"
            " event_id VARCHAR(255) NOT NULL, event_type VARCHAR(255) NOT NULL,"
            " correlation_id VARCHAR(255) NOT NULL, attempt INTEGER NOT NULL, attempted_at FLOAT NOT NULL,"
            " status_code INTEGER, latency_ms FLOAT NOT NULL, error TEXT, outcome VARCHAR(16) NOT NULL)"
        )
        conn.execute(
            "INSERT INTO delivery_attempts VALUES (1, 'msg_old', 'crm', '/s', 'e1', 't', 'c', 1, 1.0,"
            " 200, 3.0, NULL, 'delivered')"
        )
    store = SqlStore(f"sqlite:///{path}")
    try:
        await store.start()
        [old] = await store.attempts.for_event("/s", "e1")
        assert (old.delivery_id, old.verdict, old.next_attempt_at) == ("msg_old", "delivered", None)
        new = attempt(event_id="e1", source="/s")
        await store.attempts.record(new)
        assert [a.verdict for a in await store.attempts.for_event("/s", "e1")] == ["delivered", "retry"]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_writers_reconnect_after_their_connection_is_killed(fresh_postgres_url: str) -> None:
    """The claim and attempt writers keep a connection: when the server drops it, the batch under
    way fails as unavailable (or succeeds on the next connection), and later batches work."""
    store = SqlStore(fresh_postgres_url)
    await store.start()
    try:
        assert await store.claims.claim([ingest()]) == [ClaimResult.NEW]
        await store.attempts.record(attempt())
        admin = create_engine(engine_url(fresh_postgres_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            killed = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalar()
        admin.dispose()
        assert killed and killed >= 2  # the two writers' connections, at least
        for write in (lambda: store.claims.claim([ingest()]), lambda: store.attempts.record(attempt())):
            # the batch on the dead connection may fail: its caller hands its event back
            with contextlib.suppress(StoreUnavailable):
                await write()
            await write()  # a new connection
        assert await store.claims.claim([ingest()]) == [ClaimResult.NEW]
    finally:
        await store.close()
