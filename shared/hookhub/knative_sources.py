"""Runtime subscriptions on Knative: the admin function keeps each one's RabbitmqSource.

`hookhub render knative` writes a RabbitmqSource per push subscription of `hookhub.yaml` for
GitOps; a subscription created through the admin API gets its own the same way, built by the same
function (`rabbitmq_source`), created, replaced and deleted through the Kubernetes API by
the process that changes the subscription. Turned on by `knative.sources` (the admin Service sets
HOOKHUB_KNATIVE_SOURCES=true), off everywhere else.

A change is answered only once its source followed, as Svix's endpoint API does: a 201 means the
subscriber will get events. When the API server cannot be reached the change is undone and the
admin request gets a 503 (retry later); when it refuses the object, a 502 with its reason. A
deletion removes the source first, so a failure leaves the subscription as it was. Whatever a crash
in between leaves behind (a row without its source, a source without its row) is repaired by
`reconcile`, run when the hub starts and until it succeeds once. It touches only the sources it
labels as its own, never the ones GitOps applies from the rendered files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from hookhub.config import HubConfig, SubscriptionConfig
from hookhub.errors import Rejection, Unavailable
from hookhub.knative import DEFAULT_RABBITMQ_CLUSTER, SOURCE_API, rabbitmq_source, source_name
from hookhub.kube import KubeClient, KubeError, KubeUnavailable
from hookhub.subscriptions import Registry, Subscription

log = logging.getLogger(__name__)

PLURAL = "rabbitmqsources"
MANAGED_BY = ("app.kubernetes.io/managed-by", "hookhub-admin")  # what `reconcile` may delete
RECONCILE_RETRY = (5.0, 300.0)  # first and longest wait between start-up reconciliation attempts


class SourceRefused(Rejection):
    """The API server refused the RabbitmqSource: retrying the same request will not help."""

    status = 502


class SourceSync:
    """Creates, replaces and deletes the RabbitmqSources of runtime push subscriptions."""

    def __init__(self, config: HubConfig, registry: Registry, client: KubeClient | None = None) -> None:
        self.config = config
        self.registry = registry
        self._client = client
        self._task: asyncio.Task[None] | None = None

    def client(self) -> KubeClient:
        """The Kubernetes client, made on first use: outside a pod that is where it says why not."""
        if self._client is None:
            settings = self.config.knative
            try:
                self._client = KubeClient.in_cluster(
                    api_url=str(settings.api_url).rstrip("/") if settings.api_url else None,
                    namespace=settings.namespace,
                    timeout=settings.api_timeout,
                )
            except ValueError as exc:
                raise Unavailable(f"knative.sources is on but the Kubernetes API is unknown: {exc}") from None
        return self._client

    def source(self, name: str, config: SubscriptionConfig | None) -> dict[str, Any] | None:
        """The RabbitmqSource `hookhub render knative` would write for this subscription, labelled
        as the admin function's own; None for a pull subscription (or none)."""
        if config is None or config.mode != "push":
            return None
        rabbitmq_cluster = self.config.knative.rabbitmq_cluster or DEFAULT_RABBITMQ_CLUSTER
        doc = rabbitmq_source(
            self.config.model_copy(update={"subscriptions": {name: config}}),
            name,
            namespace=self.client().namespace,
            rabbitmq_cluster=rabbitmq_cluster,
        )
        key, value = MANAGED_BY
        doc["metadata"]["labels"][key] = value
        return doc

    async def follow(
        self, name: str, before: SubscriptionConfig | None, after: SubscriptionConfig | None
    ) -> None:
        """Make the subscription's source match `after` (the Registry's `follow` hook)."""
        old, new = self.source(name, before), self.source(name, after)
        resource = source_name(name)
        try:
            if new is not None:
                if new != old:
                    self._check_unique(name, resource)
                    await self.client().apply(new, PLURAL)
                    log.info("RabbitmqSource %s applied for subscription %s", resource, name)
            elif after is None and (before is None or before.mode == "push"):
                deleted = await self.client().delete(SOURCE_API, PLURAL, resource)
                if deleted:
                    log.info("RabbitmqSource %s deleted with subscription %s", resource, name)
        except KubeUnavailable as exc:
            raise Unavailable(
                f"RabbitmqSource {resource} for subscription {name!r} not applied, so the subscription "
                f"was left unchanged: {exc}; retry later"
            ) from None
        except KubeError as exc:
            raise SourceRefused(
                f"the Kubernetes API refused RabbitmqSource {resource} for subscription {name!r}, so "
                f"the subscription was left unchanged ({exc.status}): {exc.message}"
            ) from None

    def _check_unique(self, name: str, resource: str) -> None:
        """Two subscriptions must not share a source (their names differ only in `_`/case in a way
        the hashed suffix makes unlikely; a file subscription's source is GitOps')."""
        for other in self.registry.current():
            if other != name and source_name(other) == resource:
                raise ValueError(
                    f"name: its RabbitmqSource would be {resource}, already subscription {other!r}'s; "
                    "choose another name"
                )

    async def reconcile(self) -> None:
        """Every runtime push subscription's source applied, and every source this admin function
        made for a subscription that no longer exists deleted. The sources are listed before the
        store is read, so a subscription created meanwhile by another replica is not mistaken for
        a stale source."""
        client = self.client()
        key, value = MANAGED_BY
        existing = await client.list(SOURCE_API, PLURAL, f"{key}={value}")
        subs = await self.registry.refresh()
        wanted = self._wanted(subs)
        for doc in wanted.values():
            await client.apply(doc, PLURAL)
        stale = [obj["metadata"]["name"] for obj in existing if obj["metadata"]["name"] not in wanted]
        for resource in stale:
            await client.delete(SOURCE_API, PLURAL, resource)
        log.info("RabbitmqSources reconciled: %d applied, %d stale deleted", len(wanted), len(stale))

    def _wanted(self, subs: Mapping[str, Subscription]) -> dict[str, dict[str, Any]]:
        wanted = {}
        for name, sub in sorted(subs.items()):
            doc = self.source(name, sub.config) if sub.origin == "api" else None
            if doc is not None:
                wanted[doc["metadata"]["name"]] = doc
        return wanted

    def start(self) -> None:
        """Reconcile in the background until one attempt succeeds (the hub serves meanwhile)."""
        if self._task is None:
            log.info("runtime subscriptions get their RabbitmqSource through the Kubernetes API")
            self._task = asyncio.create_task(self._reconcile_until_done(), name="knative-sources")

    async def _reconcile_until_done(self) -> None:
        delay, longest = RECONCILE_RETRY
        while True:
            try:
                await self.reconcile()
                return
            except Exception as exc:  # the store or the API server: both come back
                log.warning("RabbitmqSources not reconciled (retrying in %gs): %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.close()
