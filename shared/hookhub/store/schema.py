"""Every table, declared once. The hand-written hot-path SQL takes its names from here.

A column's name is the name of the record field it stores (records.py), so rows and records
convert by name and a column is spelled in this file only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    inspect,
)
from sqlalchemy.engine import Connection

from hookhub.store.records import (
    AttemptRecord,
    DeadLetter,
    EventTypeSeen,
    IngestRecord,
    PullReceipt,
    Rejection,
    ReplayJob,
    StateRecord,
    StoredSubscription,
    SubscriptionState,
)

metadata = MetaData()

ingest_records = Table(
    "ingest_records",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("origin", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("claimed_at", Float, nullable=False),  # when the current owner claimed it (takeover)
    Index("ix_ingest_records_correlation_id", "correlation_id"),
    Index("ix_ingest_records_received_at", "received_at"),
    Index("ix_ingest_records_event_id", "event_id"),  # an operator's trace by id alone
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("delivery_id", String(64), nullable=False),
    Column("subscription", String(255), nullable=False),
    Column("source", String(255), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", Float, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("error", Text, nullable=True),
    Column("verdict", String(16), nullable=False),
    Column("next_attempt_at", Float, nullable=True),
    Index("ix_delivery_attempts_event", "source", "event_id"),
    Index("ix_delivery_attempts_delivery_id", "delivery_id"),
    Index("ix_delivery_attempts_subscription_time", "subscription", "attempted_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("subscription", String(255), nullable=False),
    Column("source", String(255), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    Column("attributes", Text, nullable=False),  # JSON object of the CloudEvent's attributes
    Column("data", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("dead_at", Float, nullable=False),
    Column("replayed_at", Float, nullable=True),
    Index("ix_dead_letters_subscription", "subscription", "dead_at"),
    Index("ix_dead_letters_dead_at", "dead_at", "delivery_id"),  # the listing's keyset order
)

subscription_states = Table(
    "subscription_states",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("failing_since", Float, nullable=True),
)

stored_subscriptions = Table(
    "stored_subscriptions",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("config", Text, nullable=False),  # JSON object: the SubscriptionConfig, secrets included
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("previous_secret", Text, nullable=True),
    Column("previous_secret_expires_at", Float, nullable=True),
)

replay_jobs = Table(
    "replay_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("subscription", String(255), nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("scanned", BigInteger, nullable=False),
    Column("sent", BigInteger, nullable=False),
    Column("error", Text, nullable=True),
    Column("cursor", Text, nullable=True),
    Column("owner", String(255), nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Index("ix_replay_jobs_state", "state", "created_at"),
    Index("ix_replay_jobs_subscription", "subscription", "created_at"),
)

rejections = Table(
    "rejections",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("provider", String(255), nullable=False),
    Column("at", Float, nullable=False),
    Column("status", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_rejections_provider", "provider", "at", "id"),
    Index("ix_rejections_at", "at", "id"),
)

event_types = Table(
    "event_types",
    metadata,
    Column("origin", String(255), primary_key=True),
    Column("type", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("last_seen", Float, nullable=False),
)

pull_receipts = Table(
    "pull_receipts",
    metadata,
    Column("receipt", String(64), primary_key=True),
    Column("subscription", String(255), nullable=False),
    Column("delivery_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("acked_at", Float, nullable=True),
    Index("ix_pull_receipts_issued_at", "issued_at"),
)

MAX_ERROR_CHARS = 500  # of an attempt's error text: enough to diagnose, bounded per row


def names(columns: Iterable[Column[Any]]) -> list[str]:
    return [c.name for c in columns]


def column_list(columns: Iterable[Column[Any]]) -> str:
    """`a, b, c` for an INSERT's column list or a SELECT."""
    return ", ".join(names(columns))


def upgrade(conn: Connection) -> None:
    """Bring a database created by an older release up to these tables (before create_all,
    which creates the missing tables with their indexes but skips existing tables entirely).

    Only additive changes and renames: `outcome` became `verdict`; new nullable columns and new
    indexes are added.
    """
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        if table is delivery_attempts and "outcome" in present and "verdict" not in present:
            conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME COLUMN outcome TO verdict")
            present.add("verdict")
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                quoted = conn.dialect.identifier_preparer.quote(column.name)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {quoted} {kind}")
        indexed = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexed:
                index.create(conn)


R = TypeVar("R")


def from_row(cls: type[R], row: Any, **converted: Any) -> R:
    """A record from a result row: every field by its column name, except those the caller
    passes already converted (JSON text, bytes)."""
    values = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name not in converted}  # type: ignore[arg-type]
    return cls(**values, **converted)


def ingest_record(row: Any) -> IngestRecord:
    return from_row(IngestRecord, row)


def attempt_record(row: Any) -> AttemptRecord:
    return from_row(AttemptRecord, row)


def dead_letter(row: Any) -> DeadLetter:
    return from_row(DeadLetter, row, attributes=json.loads(row["attributes"]), data=bytes(row["data"]))


def state_record(row: Any) -> StateRecord:
    return from_row(StateRecord, row, state=SubscriptionState(row["state"]))


def stored_subscription(row: Any) -> StoredSubscription:
    return from_row(StoredSubscription, row, config=json.loads(row["config"]))


def replay_job(row: Any) -> ReplayJob:
    return from_row(ReplayJob, row)


def rejection(row: Any) -> Rejection:
    return from_row(Rejection, row)


def event_type_seen(row: Any) -> EventTypeSeen:
    return from_row(EventTypeSeen, row)


def pull_receipt(row: Any) -> PullReceipt:
    return from_row(PullReceipt, row)


def short(error: str | None) -> str | None:
    return error[:MAX_ERROR_CHARS] if error is not None and len(error) > MAX_ERROR_CHARS else error


def recordset(columns: Iterable[Column[Any]]) -> str:
    """PostgreSQL `json_to_recordset` column definitions for `columns`. Strings stay `text`, so
    the table itself enforces their length (a cast to varchar(n) would truncate silently)."""

    def kind(column: Column[Any]) -> str:
        if isinstance(column.type, String):
            return "text"
        if isinstance(column.type, Float):
            return "float8"
        if isinstance(column.type, Integer):
            return "int8"
        raise TypeError(f"no recordset type for {column}")

    return ", ".join(f"{c.name} {kind(c)}" for c in columns)
