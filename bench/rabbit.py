"""RabbitMQ chores around the runs: hookhub's topology shape, counting queues, and cleaning up.

Every bench run uses a fresh namespace, so its exchanges and queues never mix with a real hub's or
another run's, and removing exactly those names afterwards leaves the broker as it was.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterable
from urllib.parse import urlparse

import pika
import pika.exceptions

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUORUM = {"x-queue-type": "quorum"}


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def local_only(url: str) -> pika.URLParameters:
    """Connection parameters for `url`, refused unless it names this machine: the bench loads
    nothing but loopback addresses."""
    host = urlparse(url).hostname
    if host not in LOCAL_HOSTS:
        raise ValueError(f"broker host {host!r} is not a loopback address; the bench only loads 127.0.0.1")
    return pika.URLParameters(url)


def exchange_names(namespace: str) -> list[str]:
    return [f"{namespace}.events", f"{namespace}.unrouted"]


def queue_names(namespace: str, subscriptions: Iterable[str] = ("sink",)) -> list[str]:
    return [f"{namespace}.unrouted", *(f"{namespace}.sub.{name}" for name in subscriptions)]


def connect(url: str = DEFAULT_URL) -> pika.BlockingConnection:
    params = local_only(url)
    params.connection_attempts = 3
    params.retry_delay = 1
    return pika.BlockingConnection(params)


def declare_topology(url: str, namespace: str, bindings: dict[str, list[str]]) -> None:
    """hookhub's shape: topic exchange `<ns>.events` whose alternate exchange `<ns>.unrouted`
    feeds a quorum queue of the same name, and one quorum queue per subscription."""
    conn = connect(url)
    try:
        ch = conn.channel()
        ch.exchange_declare(f"{namespace}.unrouted", "fanout", durable=True)
        ch.queue_declare(f"{namespace}.unrouted", durable=True, arguments=QUORUM)
        ch.queue_bind(f"{namespace}.unrouted", f"{namespace}.unrouted")
        ch.exchange_declare(
            f"{namespace}.events",
            "topic",
            durable=True,
            arguments={"alternate-exchange": f"{namespace}.unrouted"},
        )
        for name, patterns in bindings.items():
            queue = f"{namespace}.sub.{name}"
            ch.queue_declare(queue, durable=True, arguments=QUORUM)
            for pattern in patterns:
                ch.queue_bind(queue, f"{namespace}.events", routing_key=pattern)
    finally:
        conn.close()


def queue_depths(url: str, queues: Iterable[str]) -> dict[str, int | None]:
    """Ready messages per queue (passive declare); None where the queue does not exist."""
    depths: dict[str, int | None] = {}
    conn = connect(url)
    try:
        for queue in queues:
            ch = conn.channel()
            try:
                depths[queue] = ch.queue_declare(queue, passive=True).method.message_count
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                depths[queue] = None  # 404: a closed channel, so the next queue gets a new one
    finally:
        conn.close()
    return depths


def extra_names(namespace: str) -> tuple[list[str], list[str]]:
    """Queues and exchanges under `<ns>.` that hookhub may have added (retry, dead-letter, ...).

    Only rabbitmqctl can list them (AMQP cannot), so this is best effort: empty without it.
    """
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return [], []
    found: list[list[str]] = []
    for what in ("list_queues", "list_exchanges"):
        try:
            out = subprocess.run(
                [ctl, "-q", what, "name"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        found.append([ln.strip() for ln in out.splitlines() if ln.strip().startswith(namespace + ".")])
    return found[0], found[1]


def retry_names(namespace: str) -> list[str]:
    """hookhub's retry plumbing: `<ns>.redeliver` and every delay tier (a tier's exchange and queue
    share its name). Named here too because rabbitmqctl may be missing, and a quorum queue left
    behind keeps costing the broker file handles."""
    try:
        from hookhub.broker.base import Topology
        from hookhub.broker.rabbitmq import DEFAULT_DELAY_TIERS, delay_name, redeliver_exchange
    except ImportError:
        return []
    topology = Topology(namespace)
    return [redeliver_exchange(topology), *(delay_name(topology, t) for t in DEFAULT_DELAY_TIERS)]


def delete_namespace(url: str, namespace: str, subscriptions: Iterable[str] = ("sink",)) -> list[str]:
    """Delete the namespace's queues and exchanges; return the names deleted."""
    retry = retry_names(namespace)
    queues = queue_names(namespace, subscriptions) + retry[1:]
    exchanges = exchange_names(namespace) + retry
    more_queues, more_exchanges = extra_names(namespace)
    queues += [q for q in more_queues if q not in queues]
    exchanges += [e for e in more_exchanges if e not in exchanges]
    deleted: list[str] = []
    conn = connect(url)
    try:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                ch = conn.channel()
                with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                    if kind == "queue":
                        ch.queue_delete(name)
                    else:
                        ch.exchange_delete(name)
                    deleted.append(name)
                if ch.is_open:
                    ch.close()
    finally:
        conn.close()
    return deleted


def server_version(url: str = DEFAULT_URL) -> str:
    """RabbitMQ's version as the server announces it, for the machine context."""
    try:
        conn = connect(url)
    except pika.exceptions.AMQPError as exc:
        return f"unreachable ({type(exc).__name__})"
    try:
        props = conn._impl.server_properties  # pika keeps no public accessor for this
        version = props.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        conn.close()
