"""Chores around a hub under load: a throwaway store, and pausing or resuming its subscriptions.

Shared by bench.ingest and bench.fanout (through bench.ingest's names).
"""

from __future__ import annotations

import contextlib
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from bench import payloads

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    """A store the run owns: a throwaway PostgreSQL database, or an SQLite file in `tmp`.

    Dropped afterwards, so each run starts empty (a growing dedup table would skew later runs)
    and the `test` database the test-suite uses never fills with bench rows.
    """
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/bench.db"
        return
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"warning: cannot create a throwaway database ({exc}); using {POSTGRES_ADMIN_URL}")
        yield POSTGRES_ADMIN_URL
        return
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        try:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


def set_subscription_states(store_url: str, names: Iterable[str], paused: bool, reason: str) -> None:
    """Pause or resume subscriptions in the store, as an operator would; the dispatcher reads the
    states at start-up and then every 2 s, so a subscription paused before the hub starts is
    never consumed, and a resumed one starts within 2 s."""
    import asyncio

    from hookhub.store import open_store
    from hookhub.store.base import SubscriptionState

    state = SubscriptionState.PAUSED if paused else SubscriptionState.ACTIVE

    async def apply() -> None:
        store = open_store(store_url)
        try:
            await store.start()
            for name in names:
                await store.subscriptions.set(name, state, reason)
        finally:
            await store.close()

    asyncio.run(apply())


def pause_sink(base_url: str) -> str:
    """Pause the subscription so the dispatcher leaves the queue alone: this bench measures
    ingest, and delivering to a dead URL would only burn the hub's CPU and move the messages."""
    req = urllib.request.Request(
        base_url + "/admin/subscriptions/sink/pause",
        method="POST",
        headers={"Authorization": f"Bearer {payloads.ADMIN_TOKEN}"},
        data=b"",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return f"paused (HTTP {resp.status})"
    except urllib.error.HTTPError as exc:
        return f"could not pause (HTTP {exc.code}); the dispatcher may consume during the run"
    except OSError as exc:
        return f"could not pause ({exc}); the dispatcher may consume during the run"
