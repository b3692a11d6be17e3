"""Pull subscriptions: consumers fetch events over HTTP and acknowledge them by receipt.

Nothing is kept in this process between a pull and its ack, so any replica may answer either
(Knative). Handing an event out is three durable steps, in this order: its receipt is stored,
a copy of it is scheduled into the subscription's queue as the next attempt, due after the
visibility timeout, and only then is the original message acked. A crash between them can
only duplicate the event, never lose it.

The scheduled copy is tagged with the receipt it shadows (the `hookhubreceipt` extension,
stripped before anything leaves the hub). When it comes back, the receipt says what happened:
acknowledged meanwhile, the copy is dropped silently; not acknowledged, the timeout is logged
as a failed attempt and the copy is handed out again, or, out of attempts, becomes a dead
letter as a push delivery would. Receipts are random, so a replayed dead letter or a duplicate
publish gets receipts of its own instead of colliding with the earlier ones.

Every hand-out is logged as an attempt with the verdict `pulled`; an ack logs `delivered`
(taking the event's source, id and type from that record, which the receipt does not keep).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from hookhub.broker.base import Broker, Lease
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.config import SubscriptionConfig
from hookhub.errors import InvalidEvent
from hookhub.events import Event
from hookhub.fanout.sender import delivery_id
from hookhub.metrics import Metrics
from hookhub.store.base import AttemptLog, PullReceipts
from hookhub.store.records import AttemptRecord, DeadLetter, PullReceipt

log = logging.getLogger(__name__)

RECEIPT_EXTENSION = "hookhubreceipt"  # on a scheduled copy: the receipt of the hand-out it shadows
PULLED = "pulled"  # the attempt log's verdict for a hand-out (acked: `delivered`; timed out: `retry`/`dead`)
DELIVERED, RETRY, DEAD = "delivered", "retry", "dead"
LINGER = 0.02  # once one event is there, wait this much longer for more to batch them
MIN_WAIT = 0.05  # a pull with `wait` 0 still gives the broker this long to hand out what is ready
MIN_LEASE = 1.0  # the broker lease while a pull holds messages (renewed; matters only on a crash)
MAX_PULL = 1000


@dataclass(frozen=True, slots=True)
class Pulled:
    """One event handed to a pull consumer, acknowledged later by `receipt`."""

    receipt: str
    attempt: int
    event: Event


def new_receipt() -> str:
    """Unguessable, so a receipt cannot be acked by whoever did not receive it."""
    return secrets.token_urlsafe(18)


class Puller:
    """Hands out events of pull subscriptions' queues and settles their acknowledgements."""

    def __init__(
        self,
        broker: Broker,
        receipts: PullReceipts,
        attempt_log: AttemptLog,
        clock: Clock = SYSTEM_CLOCK,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.broker = broker
        self.receipts = receipts
        self.attempt_log = attempt_log
        self.clock = clock
        self.metrics = metrics  # counts outcomes (delivered, retry, dead) as push deliveries do

    async def pull(
        self, name: str, config: SubscriptionConfig, queue: str, max: int, wait: float
    ) -> list[Pulled]:
        """Up to `max` events of `queue`, waiting up to `wait` seconds for the first one.

        Raises `BrokerUnavailable` or `StoreUnavailable`; nothing taken is lost then (what was
        not acked goes back to the queue, what was may come again after the visibility timeout).
        """
        if not 1 <= max <= MAX_PULL:
            raise ValueError(f"max must be between 1 and {MAX_PULL}")
        inbox: asyncio.Queue[Lease] = asyncio.Queue()

        async def take(lease: Lease) -> None:
            # a hand-off: the lease stays unsettled until `_settle` acks it, or `cancel` gives it back
            inbox.put_nowait(lease)

        lease = config.visibility_timeout if config.visibility_timeout > MIN_LEASE else MIN_LEASE
        consumer = await self.broker.consume(queue, take, prefetch=max, lease=lease)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait if wait > MIN_WAIT else MIN_WAIT)
        pulled: list[Pulled] = []
        try:
            while not pulled:
                leases = await _collect(inbox, max, deadline)
                if not leases:
                    break
                pulled = await self._settle(name, config, queue, leases)
        finally:
            # leases not taken (or not settled after a failure) go back untouched; shielded so a
            # client hanging up mid-pull cannot leave them leased
            await asyncio.shield(consumer.cancel())
        return pulled

    async def ack(self, name: str, receipt_ids: Sequence[str]) -> int:
        """Acknowledge receipts of subscription `name`; how many were newly acknowledged
        (unknown ones, other subscriptions' and repeated acks count nothing, nor does an ack
        that comes after its event was dead-lettered: the dead letter stands, so a replay of
        it is the operator's call)."""
        acked = await self.receipts.acknowledge(name, receipt_ids)
        if not acked:
            return 0
        recorded = await asyncio.gather(*map(self._delivered, acked))
        taken = sum(recorded)
        self._count(name, [DELIVERED] * taken)
        return taken

    async def _delivered(self, receipt: PullReceipt) -> bool:
        """Record the acknowledged hand-out as delivered; False when it is too late for that."""
        history = await self.attempt_log.for_delivery(receipt.delivery_id)
        if any(r.verdict == DEAD and r.attempted_at >= receipt.issued_at for r in history):
            log.warning(
                "receipt %s of %s acknowledged after its event was dead-lettered: the dead letter stands",
                receipt.receipt,
                receipt.subscription,
            )
            return False
        handed = [r for r in history if r.attempt == receipt.attempt and r.verdict == PULLED]
        known = handed[-1] if handed else history[-1] if history else None
        if known is None:  # its hand-out record is gone (purged): nothing to name the event by
            log.warning(
                "acknowledged receipt %s of %s has no attempt record", receipt.receipt, receipt.subscription
            )
            return True
        acked_at = receipt.acked_at if receipt.acked_at is not None else self.clock.now()
        await self.attempt_log.record(
            dataclasses.replace(
                known,
                attempt=receipt.attempt,
                attempted_at=acked_at,
                status_code=None,
                latency_ms=max(acked_at - receipt.issued_at, 0.0) * 1000,
                error=None,
                verdict=DELIVERED,
                next_attempt_at=None,
            )
        )
        return True

    async def _settle(
        self, name: str, config: SubscriptionConfig, queue: str, leases: list[Lease]
    ) -> list[Pulled]:
        """Hand out what is due, drop copies whose event was acknowledged, dead-letter what ran
        out of attempts; every lease is acked, after what replaces it is durable."""
        now = self.clock.now()
        previous = await asyncio.gather(*(self._shadowed(name, lease) for lease in leases))
        records: list[tuple[AttemptRecord, DeadLetter | None]] = []
        settled: list[Lease] = []  # acked without a hand-out
        handing: list[tuple[Lease, Event, PullReceipt]] = []
        for lease, shadowed in zip(leases, previous, strict=True):
            event = untagged(lease.event)
            did = delivery_id(name, event)
            if shadowed is not None and shadowed.delivery_id == did:
                if shadowed.acked_at is not None:
                    settled.append(lease)  # the consumer has it: this copy is not needed
                    continue
                timed_out = _timeout_record(name, event, shadowed, config, now)
                if timed_out.verdict == DEAD:
                    records.append((timed_out, DeadLetter.after(timed_out, event, now)))
                    settled.append(lease)
                    log.warning(
                        "dead letter: event %s to pull subscription %s, not acknowledged after %d attempts",
                        event.id,
                        name,
                        shadowed.attempt,
                    )
                    continue
                records.append((timed_out, None))
            receipt = PullReceipt(new_receipt(), name, did, lease.attempt, now)
            handing.append((lease, event, receipt))
            records.append((_pulled_record(name, event, receipt, config), None))
        if handing:
            await self.receipts.issue([receipt for _, _, receipt in handing])
        if records:
            await asyncio.gather(*(self.attempt_log.record(r, dead) for r, dead in records))
            self._count(name, [r.verdict for r, _ in records if r.verdict != PULLED])
        delay = config.visibility_timeout
        await asyncio.gather(
            *(
                self.broker.schedule(queue, tagged(event, r.receipt), attempt=lease.attempt + 1, delay=delay)
                for lease, event, r in handing
            )
        )
        await asyncio.gather(*(self.broker.ack(lease) for lease in [*settled, *(h[0] for h in handing)]))
        return [Pulled(r.receipt, lease.attempt, event) for lease, event, r in handing]

    def _count(self, name: str, verdicts: list[str]) -> None:
        if self.metrics is not None:
            for verdict in verdicts:
                self.metrics.deliveries.labels(name, verdict).inc()
                if verdict == DEAD:
                    self.metrics.dead_letters.labels(name).inc()

    async def _shadowed(self, name: str, lease: Lease) -> PullReceipt | None:
        """The receipt a returning copy stands for; None for anything else (a fresh event, or
        a tag that is no receipt of this subscription's)."""
        tag = lease.event.extensions.get(RECEIPT_EXTENSION)
        if not tag or lease.attempt < 2:
            return None
        receipt = await self.receipts.get(tag)
        return receipt if receipt is not None and receipt.subscription == name else None


async def _collect(inbox: asyncio.Queue[Lease], limit: int, deadline: float) -> list[Lease]:
    """The leases the consumer hands over: waits until `deadline` for the first, then
    `LINGER` for more (or until `limit` are there)."""
    loop = asyncio.get_running_loop()
    try:
        first = await asyncio.wait_for(inbox.get(), max(deadline - loop.time(), 0.0))
    except TimeoutError:
        return []
    leases = [first]
    linger_end = min(loop.time() + LINGER, deadline)
    while len(leases) < limit:
        if not inbox.empty():
            leases.append(inbox.get_nowait())
            continue
        remaining = linger_end - loop.time()
        if remaining <= 0:
            break
        try:
            leases.append(await asyncio.wait_for(inbox.get(), remaining))
        except TimeoutError:
            break
    return leases


def tagged(event: Event, receipt: str) -> Event:
    """The copy scheduled as the next attempt, naming the receipt it shadows. An event whose
    attributes leave no room for the tag is scheduled untagged: acked or not, it comes back
    as a new hand-out (a duplicate, never a loss)."""
    try:
        return dataclasses.replace(event, extensions={**event.extensions, RECEIPT_EXTENSION: receipt})
    except InvalidEvent:
        log.warning("event %s has no room for a pull receipt tag: it will be handed out again", event.id)
        return event


def untagged(event: Event) -> Event:
    """The event as it was published, without the hub's receipt tag."""
    if RECEIPT_EXTENSION not in event.extensions:
        return event
    extensions = {k: v for k, v in event.extensions.items() if k != RECEIPT_EXTENSION}
    return dataclasses.replace(event, extensions=extensions)


def _pulled_record(
    name: str, event: Event, receipt: PullReceipt, config: SubscriptionConfig
) -> AttemptRecord:
    return AttemptRecord.of(
        name,
        receipt.delivery_id,
        event,
        attempt=receipt.attempt,
        attempted_at=receipt.issued_at,
        status_code=None,
        latency_ms=0.0,
        error=None,
        verdict=PULLED,
        next_attempt_at=receipt.issued_at + config.visibility_timeout,  # back then unless acked
    )


def _timeout_record(
    name: str, event: Event, shadowed: PullReceipt, config: SubscriptionConfig, now: float
) -> AttemptRecord:
    """The outcome of a hand-out that was not acknowledged in time."""
    dead = shadowed.attempt >= config.max_attempts
    return AttemptRecord.of(
        name,
        shadowed.delivery_id,
        event,
        attempt=shadowed.attempt,
        attempted_at=shadowed.issued_at,
        status_code=None,
        latency_ms=max(now - shadowed.issued_at, 0.0) * 1000,
        error=f"not acknowledged within {config.visibility_timeout:g}s",
        verdict=DEAD if dead else RETRY,
        next_attempt_at=None if dead else now,
    )
