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

from hookhub.store.records import AttemptRecord, DeadLetter, IngestRecord

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
)

subscription_states = Table(
    "subscription_states",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

MAX_ERROR_CHARS = 500  # of an attempt's error text: enough to diagnose, bounded per row


def names(columns: Iterable[Column[Any]]) -> list[str]:
    return [c.name for c in columns]


def column_list(columns: Iterable[Column[Any]]) -> str:
    """`a, b, c` for an INSERT's column list or a SELECT."""
    return ", ".join(names(columns))


def upgrade(conn: Connection) -> None:
    """Bring a database created by an older release up to these tables (before create_all).

    Only additive changes and renames: `outcome` became `verdict`; new nullable columns are added.
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
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")


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
