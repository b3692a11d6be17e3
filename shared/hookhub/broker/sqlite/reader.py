"""The SQLite broker's read-only questions (depths, queue details), asked on a connection of
their own so that they neither wait for nor hold up the writer's batches (WAL readers do not
block the writer)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from hookhub.broker.base import QueueInfo, Topology
from hookhub.broker.sqlite.writer import BINDINGS_TABLE, COUNT_RANGE, MESSAGES_TABLE, prefix_range

_BOUND = f"SELECT DISTINCT queue FROM {BINDINGS_TABLE} WHERE exchange = ?"
# leased: handed out (a token, not NULL or 0) and the lease not over yet; the rest is waiting
_QUEUE = (
    f"SELECT COUNT(*), COALESCE(SUM(lease_id IS NOT NULL AND lease_id != 0 AND available_at > ?), 0) "
    f"FROM {MESSAGES_TABLE} WHERE queue = ?"
)


def count(conn: sqlite3.Connection, topology: Topology, bound: Sequence[str]) -> dict[str, int]:
    """Depths of the unrouted and dead queues, of `bound`, of every queue bound in the file, and
    of any other queue of the namespace that holds messages (a removed subscription's)."""
    queues = [topology.unrouted_queue, topology.dead_queue, *bound]
    queues += [row[0] for row in conn.execute(_BOUND, (topology.exchange,))]
    depths = dict.fromkeys(queues, 0)
    low, high = prefix_range(topology.namespace + ".")
    depths.update(conn.execute(COUNT_RANGE, (low, high)).fetchall())
    return depths


def describe(
    conn: sqlite3.Connection, topology: Topology, queues: Sequence[str], now: float
) -> list[QueueInfo]:
    """The queues of `queues` that exist: bound in the file, holding rows, or the unrouted and
    dead queues. Consumers are None: other processes' consumers leave no trace in the file."""
    known = {topology.unrouted_queue, topology.dead_queue}
    known.update(row[0] for row in conn.execute(_BOUND, (topology.exchange,)))
    infos = []
    for queue in queues:
        rows, leased = conn.execute(_QUEUE, (now, queue)).fetchone()
        if rows or queue in known:
            infos.append(QueueInfo(queue, rows - leased, None, leased))
    return infos
