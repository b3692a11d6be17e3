"""Prometheus metrics, one registry per hub so that tests and embedded hubs never share counts.

Every label value comes from the configuration (provider, producer and subscription names) or
from a fixed set (outcomes, queues of the topology): a client must never be able to mint a new
time series, say by POSTing to `/webhooks/<anything>`. Names the configuration does not know are
counted under UNKNOWN_LABEL.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

UNKNOWN_LABEL = "unknown"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter(
            "hookhub_ingested_events",
            "Inbound requests by provider (or producer) and result (accepted, duplicate, or why refused)",
            ["provider", "result"],
            registry=self.registry,
        )
        self.ingest_latency = Histogram(
            "hookhub_ingest_duration_seconds",
            "Time from request received to answer, accepted events only",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.deliveries = Counter(
            "hookhub_deliveries",
            "Delivery attempts by subscription and verdict (delivered, retry, dead, parked)",
            ["subscription", "verdict"],
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "hookhub_delivery_duration_seconds",
            "Time a subscriber took to answer one delivery attempt",
            ["subscription"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "hookhub_dead_letters",
            "Deliveries that became dead letters, by subscription",
            ["subscription"],
            registry=self.registry,
        )
        self.auto_disabled = Counter(
            "hookhub_subscriptions_auto_disabled",
            "Subscriptions disabled for failing longer than their disable_after, by subscription",
            ["subscription"],
            registry=self.registry,
        )
        self.archived = Counter(
            "hookhub_archived_events", "Events written to the archive", registry=self.registry
        )
        self.subscription_active = Gauge(
            "hookhub_subscription_active",
            "1 while a subscription is being delivered, 0 while paused or disabled",
            ["subscription"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "hookhub_queue_depth", "Messages waiting in each hookhub queue", ["queue"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
