"""The hub: one configured set of providers, producers, broker, store and metrics.

`hookhub run` builds one for its whole process; each functions-framework target builds one
lazily on its first request (`get_hub`), since functions-framework's ASGI app has no start-up hook.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hookhub.broker import open_broker
from hookhub.broker.base import Binding, Topology
from hookhub.config import HubConfig, load_config, redact_url
from hookhub.delivery import Deliverer
from hookhub.dispatcher import Dispatcher
from hookhub.fanout import FanOut
from hookhub.ingest import Ingestor
from hookhub.metrics import Metrics
from hookhub.providers import Provider, provider_class
from hookhub.store import StoreUnavailable, open_store

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.topology = Topology(config.namespace)
        self.providers: dict[str, Provider[Any]] = {
            name: provider_class(settings.kind)(name, settings) for name, settings in config.providers.items()
        }
        self.producer_tokens = {name: producer.token for name, producer in config.producers.items()}
        self.broker = open_broker(config.broker, self.topology)
        self.store = open_store(config.store)
        self.ingestor = Ingestor(self.broker, self.store, config.publish_timeout)
        self.deliverer = Deliverer()
        self.fanout = FanOut(self.store, self.deliverer, self.metrics)
        self.dispatcher: Dispatcher | None = None
        self._store_ready = False

    def bindings(self) -> list[Binding]:
        """Each subscription's queue and the type patterns routed into it."""
        return [
            Binding(self.topology.subscription_queue(name), tuple(sub.types))
            for name, sub in self.config.subscriptions.items()
        ]

    def queue_for(self, subscription: str) -> str:
        return self.topology.subscription_queue(subscription)

    async def start(self, dispatch: bool = False) -> None:
        """Connect broker and store; with `dispatch`, also deliver every push subscription
        from this process (the local shape; on Knative the broker triggers `fanout` instead)."""
        await self.ensure_store()
        await self.broker.start(self.bindings())
        if dispatch:
            subs = self.config.subscriptions
            self.dispatcher = Dispatcher(
                subs,
                {name: self.queue_for(name) for name in subs},
                self.broker,
                self.store,
                self.fanout,
                self.metrics,
            )
            await self.dispatcher.start()
        log.info(
            "hub started: broker %s, store %s, %d providers",
            redact_url(self.config.broker),
            redact_url(self.config.store),
            len(self.providers),
        )

    async def ensure_store(self) -> bool:
        """Create the store's schema once it is reachable; false while it is not."""
        if not self._store_ready:
            try:
                await self.store.start()
                self._store_ready = True
            except StoreUnavailable as exc:
                log.warning("store not ready: %s", exc)
        return self._store_ready

    async def readiness(self) -> dict[str, bool]:
        broker_ok, store_ok = await asyncio.gather(self.broker.ready(), self.ensure_store())
        if store_ok:
            store_ok = await self.store.ping()
        return {"broker": broker_ok, "store": store_ok}

    async def refresh_gauges(self) -> None:
        try:
            depths = await asyncio.wait_for(self.broker.queue_depths(), timeout=2.0)
        except Exception as exc:  # metrics must render even when the broker is down
            log.debug("queue depths unavailable: %s", exc)
            return
        for queue, depth in depths.items():
            self.metrics.queue_depth.labels(queue).set(depth)

    async def close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        await self.ingestor.drain()
        await self.deliverer.close()
        await self.broker.close()
        await self.store.close()


_hub: Hub | None = None
_hub_lock: asyncio.Lock | None = None


async def get_hub() -> Hub:
    """The process-wide hub for functions-framework targets, started on first use."""
    global _hub, _hub_lock
    if _hub is not None:
        return _hub
    if _hub_lock is None:
        _hub_lock = asyncio.Lock()
    async with _hub_lock:
        if _hub is None:
            hub = Hub(load_config())
            await hub.start()
            _hub = hub
    return _hub


async def close_hub() -> None:
    """Stop the process-wide hub (tests, and servers that own their shutdown)."""
    global _hub, _hub_lock
    hub, _hub, _hub_lock = _hub, None, None
    if hub is not None:
        await hub.close()
