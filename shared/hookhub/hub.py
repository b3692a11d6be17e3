"""The hub: one configured set of providers, producers, broker, store and metrics.

`hookhub run` builds one for its whole process; each functions-framework target builds one
lazily on its first request (`get_hub`), since functions-framework's ASGI app has no start-up hook.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from hookhub import logs
from hookhub.archive import open_archive
from hookhub.archive.archiver import Archiver
from hookhub.broker import open_broker
from hookhub.broker.base import Binding, Broker, Topology
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.config import HubConfig, SubscriptionConfig, config_path, load_config
from hookhub.deadletters import DeadLetters
from hookhub.errors import ConfigError, Unavailable
from hookhub.fanout.attempts import PARK_RECHECK_SECONDS, Attempts
from hookhub.fanout.dispatcher import Dispatcher
from hookhub.fanout.sender import Sender
from hookhub.fanout.trigger import Trigger
from hookhub.ingest import Ingestor
from hookhub.knative_sources import SourceSync
from hookhub.metrics import Metrics
from hookhub.observations import Observer
from hookhub.providers import Provider, provider_class
from hookhub.pull import Puller
from hookhub.replay import ReplayRunner
from hookhub.startup import log_startup
from hookhub.store import StoreUnavailable, open_store
from hookhub.subscriptions import Registry

log = logging.getLogger(__name__)


class QueueNames(dict[str, str]):
    """Subscription name -> its queue, for any name (runtime subscriptions come and go)."""

    def __init__(self, topology: Topology) -> None:
        super().__init__()
        self.topology = topology

    def __missing__(self, name: str) -> str:
        return self.topology.subscription_queue(name)


class Hub:
    def __init__(
        self,
        config: HubConfig,
        *,
        broker: Broker | None = None,
        clock: Clock = SYSTEM_CLOCK,
        processes: int = 1,
    ) -> None:
        self.config = config
        self.processes = processes  # `hookhub run --workers`: processes serving this config side by side
        self.clock = clock
        self.metrics = Metrics()
        self.topology = Topology(config.namespace)
        self.providers: dict[str, Provider[Any]] = {
            name: provider_class(settings.kind)(name, settings) for name, settings in config.providers.items()
        }
        self.producer_tokens = {name: producer.token for name, producer in config.producers.items()}
        self.broker = broker or open_broker(config.broker, self.topology)
        self.store = open_store(config.store)
        self.archive = open_archive(config.archive)
        self.ingestor = Ingestor(self.broker, self.store.claims, config.publish_timeout)
        self.observer = Observer(self.store.observations, clock)
        self.sender = Sender()
        self.queue_for = QueueNames(self.topology)
        self.registry = Registry(
            config.subscriptions, self.store.catalog, self.store.subscriptions, clock=clock
        )
        self.registry.on_change = self.apply_topology
        self.registry.on_delete = self._deleted
        self.registry.on_state = self._state_changed
        # on Knative, the admin function keeps each runtime push subscription's RabbitmqSource
        self.sources = SourceSync(config, self.registry) if config.knative.sources else None
        if self.sources is not None:
            self.registry.follow = self.sources.follow
        self.trigger = Trigger(
            self.registry,
            self.broker,
            self.queue_of,
            self.store.attempts,
            self.store.subscriptions,
            self._attempts(park_delay=PARK_RECHECK_SECONDS),
            clock,
        )
        self.dead_letters = DeadLetters(self.broker, self.store.attempts, self._existing_queue)
        self.replays = ReplayRunner(
            self.broker, self.store.jobs, self.archive, self._replay_target, owner=_owner(), clock=clock
        )
        self.pull = Puller(self.broker, self.store.receipts, self.store.attempts, clock=clock)
        self.dispatcher: Dispatcher | None = None
        self.archiver: Archiver | None = None
        self._store_ready = False

    @property
    def push(self) -> dict[str, SubscriptionConfig]:
        """The push subscriptions known now (file and runtime)."""
        return {name: sub.config for name, sub in self.registry.current().items() if sub.push}

    def queue_of(self, name: str) -> str:
        return self.queue_for[name]

    def _existing_queue(self, name: str) -> str | None:
        return self.queue_of(name) if name in self.registry.current() else None

    def _replay_target(self, name: str) -> tuple[SubscriptionConfig, str] | None:
        sub = self.registry.current().get(name)
        return None if sub is None else (sub.config, self.queue_of(name))

    def pull_target(self, name: str) -> tuple[SubscriptionConfig, str] | None:
        """A pull subscription's config and queue, for the pull API."""
        sub = self.registry.current().get(name)
        return None if sub is None or sub.push else (sub.config, self.queue_of(name))

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
        """Each subscription's queue (push and pull) with the type patterns routed into it, and
        the archive's queue, which takes every event."""
        subs = [
            Binding(self.queue_of(name), tuple(sub.config.types))
            for name, sub in self.registry.current().items()
        ]
        return [*subs, Binding(self.topology.archive_queue, ("#",))]

    async def apply_topology(self) -> None:
        """Bind the current set of subscriptions (after one was created, changed or deleted)."""
        await self.broker.start(self.bindings())
        if self.dispatcher is not None:
            await self.dispatcher.sync_states()

    async def _deleted(self, name: str) -> None:
        dropped = await self.broker.delete_queue(self.queue_of(name))
        log.info("subscription %s deleted with its queue (%d events dropped)", name, dropped)

    async def _state_changed(self, name: str) -> None:
        if self.dispatcher is not None:
            self.dispatcher.attempts.health.forget(name)
            await self.dispatcher.sync_states()

    async def start(self, dispatch: bool = False) -> None:
        """Connect broker and store; with `dispatch`, also deliver every push subscription,
        archive and run resend jobs from this process (the local shape; on Knative the broker
        triggers `fanout` and the archiver runs on its own)."""
        if await self.ensure_store():
            await self.registry.try_refresh()
        await self.broker.start(self.bindings())
        self.observer.start()
        if self.sources is not None:
            self.sources.start()
        if dispatch:
            self.dispatcher = Dispatcher(
                self.registry,
                self.queue_of,
                self.broker,
                self.store.subscriptions,
                self._attempts(park_delay=0.0),  # a parked subscription's worker stops consuming
                self.metrics,
                self.processes,
            )
            await self.dispatcher.start()
            await self.start_archiver()
            self.replays.start()
        # the shape and the subscriptions are in the start-up summary (`startup.log_startup`)
        log.info("hub started%s", ", delivering in this process" if dispatch else "")

    async def start_archiver(self) -> None:
        """Consume the archive queue into the archive from this process (`hookhub run`, and
        `hookhub archiver`, which starts the hub without `dispatch` and then only this)."""
        if self.archiver is None:
            self.archiver = Archiver(
                self.broker,
                self.archive,
                self.topology.archive_queue,
                retention=self.config.archive_retention,
                clock=self.clock,
                metrics=self.metrics,
            )
        await self.archiver.start()

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
        await self.replays.stop()
        if self.archiver is not None:
            await self.archiver.stop()
        await self.ingestor.drain()
        await self.observer.stop()
        if self.sources is not None:
            await self.sources.close()
        await self.sender.close()
        await self.broker.close()
        await self.archive.close()
        await self.store.close()


def _owner() -> str:
    """This process, as the owner of the resend jobs it runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
