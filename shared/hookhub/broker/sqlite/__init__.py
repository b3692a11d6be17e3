"""The embedded broker: durable queues in one SQLite file, for the local / single-node shape.

It keeps RabbitMQ's topology (see `base`): each event is routed in Python through the bindings
(AMQP topic patterns) and stored once per matching queue, or in the unrouted queue. A publish is
confirmed when its transaction has committed with `synchronous=FULL` in WAL mode, i.e. it is on
disk. Commits go through a `GroupCommitter`, so concurrent requests share one fsync; leases,
renewals and settlements go through the same one, so under load one transaction carries the acks
of many handlers plus the next lease.

Bindings live in a table, like bindings on a RabbitMQ server: a process that publishes routes to
queues another process (the fan-out side) declared. `start` replaces this namespace's rows with
the given set.

Modules: `writer` (schema, statements, the writer thread's batch), `reader` (depths and queue
details on a read connection), `consumer` (leasing, lease renewal, poison), `broker` (the
`Broker` methods).

Why the stdlib `sqlite3` and not SQLAlchemy here: the writer is one thread with one connection
running one fixed `executemany` per batch; SQLAlchemy would add statement compilation and its
pysqlite transaction workarounds (it needs event hooks to emit `BEGIN IMMEDIATE`) and nothing in
return, since no other database backs this broker.
"""

from hookhub.broker.sqlite.broker import SQLiteBroker
from hookhub.broker.sqlite.writer import BINDINGS_TABLE, MESSAGES_TABLE, sqlite_path

__all__ = ["BINDINGS_TABLE", "MESSAGES_TABLE", "SQLiteBroker", "sqlite_path"]
