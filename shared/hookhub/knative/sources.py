"""One eventing-rabbitmq RabbitmqSource per push subscription: `hookhub render knative` writes
them for GitOps and the admin function applies them at run time (`hookhub.knative_sources`), both
through `rabbitmq_source`, so the two can never disagree."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlparse

from hookhub.broker.base import Topology
from hookhub.config import HubConfig
from hookhub.knative.common import (
    DEFAULT_BACKOFF_DELAY,
    DEFAULT_RETRY,
    SERVING_API,
    SOURCE_API,
    RenderError,
    is_dns_label,
    iso8601_duration,
    parallelism,
    source_name,
)

FANOUT = "fanout"  # the Knative Service name and its FUNCTION_TARGET


def _cluster_reference(rabbitmq_cluster: str) -> dict[str, str]:
    namespace, _, name = rabbitmq_cluster.rpartition("/")
    for part in (name, namespace) if namespace else (name,):
        if not is_dns_label(part):
            raise RenderError(
                f"rabbitmq cluster {rabbitmq_cluster!r}: use [NAMESPACE/]NAME (DNS-1123 labels)"
            )
    return {"name": name, "namespace": namespace} if namespace else {"name": name}


def _vhost(broker: str) -> str | None:
    """The vhost the hub's queues live in, from its broker URL; None for RabbitMQ's default `/`."""
    parsed = urlparse(broker)
    if parsed.scheme not in ("amqp", "amqps"):
        raise RenderError(
            f"broker: RabbitmqSources consume RabbitMQ queues; the broker must be amqp:// or amqps://, "
            f"not {parsed.scheme}://"
        )
    vhost = unquote(parsed.path[1:])
    return vhost if vhost not in ("", "/") else None


def rabbitmq_source(
    config: HubConfig,
    name: str,
    *,
    namespace: str,
    rabbitmq_cluster: str,
    retry: int = DEFAULT_RETRY,
    backoff_delay: float = DEFAULT_BACKOFF_DELAY,
) -> dict[str, Any]:
    """The RabbitmqSource for push subscription `name`.

    No `deadLetterSink`: the RabbitmqSource CRD's `delivery` has only retry, backoffPolicy and
    backoffDelay. After the last retry the adapter nacks without requeue, so the message goes to the
    queue's dead-letter exchange if the hub declares one, and is dropped otherwise (README).
    """
    sub = config.subscriptions[name]
    if sub.mode != "push":
        raise RenderError(f"subscriptions.{name}: a pull subscription gets no event source")
    if not 0 <= retry < 2**31:
        raise RenderError(f"retry must be 0..2^31-1 (int32), not {retry}")
    resources: dict[str, Any] = {}
    vhost = _vhost(config.broker)
    if vhost is not None:
        resources["vhost"] = vhost
    resources |= {
        "predeclared": True,  # the hub declares and binds the quorum queue; the source only consumes
        "queueName": Topology(config.namespace).subscription_queue(name),
        "parallelism": parallelism(sub),
    }
    return {
        "apiVersion": SOURCE_API,
        "kind": "RabbitmqSource",
        "metadata": {
            "name": source_name(name),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "hookhub", "app.kubernetes.io/component": "fanout-source"},
            "annotations": {"hookhub.dev/subscription": name},  # the exact name (labels could not hold it)
        },
        "spec": {
            "rabbitmqClusterReference": _cluster_reference(rabbitmq_cluster),
            "rabbitmqResourcesConfig": resources,
            "delivery": {
                "retry": retry,
                "backoffPolicy": "exponential",
                "backoffDelay": iso8601_duration(backoff_delay),
            },
            "sink": {
                # ref.namespace left out: it defaults to the source's own, where fanout always is
                "ref": {"apiVersion": SERVING_API, "kind": "Service", "name": FANOUT},
                "uri": "/" + quote(name, safe=""),  # resolved against the Service's URL
            },
        },
    }
