"""The hub: one configured set of providers, producers, broker, store and metrics.

`hookhub run` builds one for its whole process; each functions-framework target builds one
lazily on its first request (`get_hub`), since functions-framework's ASGI app has no start-up hook.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from hookhub import logs
from hookhub.broker import open_broker
from hookhub.broker.base import Binding, Broker, Topology
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.config import HubConfig, config_path, load_config
from hookhub.errors import ConfigError, Unavailable
from hookhub.fanout.attempts import PARK_RECHECK_SECONDS, Attempts
from hookhub.fanout.dispatcher import Dispatcher
from hookhub.fanout.sender import Sender
from hookhub.fanout.trigger import Trigger
from hookhub.ingest import Ingestor
from hookhub.metrics import Metrics
from hookhub.providers import Provider, provider_class
from hookhub.startup import log_startup
from hookhub.store import StoreUnavailable, open_store

log = logging.getLogger(__name__)


class Hub:
    def __init__(
        self, config: HubConfig, *, broker: Broker | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.topology = Topology(config.namespace)
        self.providers: dict[str, Provider[Any]] = {
            name: provider_class(settings.kind)(name, settings) for name, settings in config.providers.items()
        }
        self.producer_tokens = {name: producer.token for name, producer in config.producers.items()}
        self.broker = broker or open_broker(config.broker, self.topology)
        self.store = open_store(config.store)
        self.ingestor = Ingestor(self.broker, self.store.claims, config.publish_timeout)
        self.sender = Sender()
        self.push = {name: sub for name, sub in config.subscriptions.items() if sub.mode == "push"}
        self.queue_for = {name: self.topology.subscription_queue(name) for name in self.push}
        self.trigger = Trigger(
            self.push,
            self.broker,
            self.queue_for,
            self.store.attempts,
            self.store.subscriptions,
            self._attempts(park_delay=PARK_RECHECK_SECONDS),
        )
        self.dispatcher: Dispatcher | None = None
        self._store_ready = False

    def _attempts(self, park_delay: float) -> Attempts:
        return Attempts(
            self.sender,
            self.store.attempts,
            self.store.subscriptions,
            self.metrics,
            park_delay=park_delay,
            clock=self.clock,
        )

    def bindings(self) -> list[Binding]:
        """Each push subscription's queue and the type patterns routed into it."""
        return [Binding(self.queue_for[name], tuple(sub.types)) for name, sub in self.push.items()]

    async def start(self, dispatch: bool = False) -> None:
        """Connect broker and store; with `dispatch`, also deliver every push subscription
        from this process (the local shape; on Knative the broker triggers `fanout` instead)."""
        await self.ensure_store()
        await self.broker.start(self.bindings())
        if dispatch:
            self.dispatcher = Dispatcher(
                self.push,
                self.queue_for,
                self.broker,
                self.store.subscriptions,
                self._attempts(park_delay=0.0),  # a parked subscription's worker stops consuming
                self.metrics,
            )
            await self.dispatcher.start()
        # the shape and the subscriptions are in the start-up summary (`startup.log_startup`)
        log.info("hub started%s", ", delivering in this process" if dispatch else "")

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
        """Stop in dependency order: deliveries under way finish and settle before the broker
        and store go away, so a normal stop neither loses nor repeats an event."""
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        await self.ingestor.drain()
        await self.sender.close()
        await self.broker.close()
        await self.store.close()


_hub: Hub | None = None
_hub_lock: asyncio.Lock | None = None
_config_failure: str | None = None  # why the config could not load: logged once, then 503s


def _configure_logging() -> None:
    """functions-framework leaves the root logger bare: log as `hookhub run` does, with
    HOOKHUB_LOG_LEVEL and HOOKHUB_LOG_FORMAT (text or json), unless the host set logging up."""
    if logging.getLogger().handlers:
        return
    try:
        logs.configure(
            os.environ.get("HOOKHUB_LOG_LEVEL", "info"), os.environ.get("HOOKHUB_LOG_FORMAT", "text")
        )
    except ValueError as exc:
        logs.configure("info", "text")
        log.warning("%s; logging at info as text", exc)


async def get_hub() -> Hub:
    """The process-wide hub for functions-framework targets, started on first use.

    A config that cannot load is logged once, as one line, and every request then gets a 503
    (`Unavailable`): the process stays up, answers promptly and stops on SIGTERM.
    """
    global _hub, _hub_lock, _config_failure
    if _hub is not None:
        return _hub
    if _config_failure is not None:
        raise Unavailable(_config_failure, retry_after=60)
    if _hub_lock is None:
        _hub_lock = asyncio.Lock()
    async with _hub_lock:
        if _hub is None and _config_failure is None:
            _configure_logging()
            path = config_path()
            try:
                config = load_config(path)
            except ConfigError as exc:
                _config_failure = "the hub's configuration cannot be loaded (see its log)"
                log.error(
                    "configuration cannot be loaded, answering 503: %s", "; ".join(str(exc).splitlines())
                )
            else:
                log_startup(config, path, log)
                hub = Hub(config)
                await hub.start()
                _hub = hub
    if _hub is None:
        raise Unavailable(_config_failure or "the hub is not started", retry_after=60)
    return _hub


async def close_hub() -> None:
    """Stop the process-wide hub (tests, and servers that own their shutdown); forgets a
    config failure too, so the next `get_hub` loads the config again."""
    global _hub, _hub_lock, _config_failure
    hub, _hub, _hub_lock, _config_failure = _hub, None, None, None
    if hub is not None:
        await hub.close()
