"""The SQLite broker's consume side: one `SQLiteConsumer` per `consume` call.

The prefetch slots, handler tasks, lease renewal and `cancel` are `LeasingConsumer`'s; here is
how rows are leased, renewed, given back and moved to the dead queue when they are not events.
It wakes at once when this process writes into its queue, and otherwise polls (`POLL_MIN`-
`POLL_MAX`) for other processes' writes, or sleeps until the next scheduled row is due.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hookhub.broker.base import BrokerUnavailable, LeaseHandler, PoisonMessage, event_from_message
from hookhub.broker.leasing import LeasedReceipt, LeasingConsumer
from hookhub.broker.sqlite.writer import DeadOp, LeaseOp, ReleaseOp, RenewOp, Row
from hookhub.clock import SYSTEM_CLOCK
from hookhub.events import Event

if TYPE_CHECKING:
    from hookhub.broker.sqlite.broker import SQLiteBroker

log = logging.getLogger(__name__)

POLL_MIN = 0.05  # idle polling for other processes' writes backs off from here...
POLL_MAX = 0.2  # ...to here; this process's own writes wake a consumer at once


class SQLiteReceipt(LeasedReceipt):
    __slots__ = ()
    broker = "SQLite"


def decode(headers: bytes, body: bytes) -> Event:
    try:
        table = json.loads(headers)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise PoisonMessage(f"headers are not a JSON object: {exc}") from exc
    return event_from_message(table, body)


class SQLiteConsumer(LeasingConsumer[SQLiteReceipt]):
    """Leases due rows of one queue; polls for other processes' writes."""

    def __init__(
        self, broker: SQLiteBroker, queue: str, handler: LeaseHandler, prefetch: int, lease: float
    ) -> None:
        super().__init__(
            broker,
            queue,
            handler,
            SQLiteReceipt,
            prefetch=prefetch,
            lease=lease,
            clock=SYSTEM_CLOCK,  # rows hold unix times written by several processes
            poll=(POLL_MIN, POLL_MAX),
        )
        self._broker = broker

    async def _lease_due(self, limit: int) -> tuple[int, float | None]:
        rows, token, next_due = await self._broker.submit(LeaseOp(self.queue, limit, self._lease))
        if self._cancelled:  # leased after cancel: give them straight back
            if rows:
                with contextlib.suppress(BrokerUnavailable):
                    await self._broker.submit(ReleaseOp(self.queue, [(row[0], token) for row in rows]))
            return 0, None
        for row in rows:
            self._deliver(row, token)
        return len(rows), next_due

    def _deliver(self, row: Row, token: int) -> None:
        seq, headers, body, attempts, lease_id = row
        try:
            event = decode(headers, body)
        except PoisonMessage as exc:
            self._tasks.spawn(self._to_dead(seq, token, str(exc)))
            return
        self._hand_out(event, seq, token, attempts, lease_id is not None)

    async def _to_dead(self, seq: int, token: int, reason: str) -> None:
        dead = self._broker.topology.dead_queue
        try:
            moved = await self._broker.submit(DeadOp(seq, token, dead, reason))
        except BrokerUnavailable as exc:
            log.warning(
                "could not move message %s of %s to %s (back after its lease): %s", seq, self.queue, dead, exc
            )
            return
        if moved:
            log.warning("message %s in %s is not an event (%s): moved to %s", seq, self.queue, reason, dead)

    async def _renew_held(self, held: Sequence[SQLiteReceipt]) -> int:
        kept: int = await self._broker.submit(
            RenewOp(self.queue, [(r.seq, r.token) for r in held], self._lease)
        )
        return kept

    async def _give_back(self, leftovers: Sequence[SQLiteReceipt]) -> None:
        await self._broker.submit(ReleaseOp(self.queue, [(r.seq, r.token) for r in leftovers]))
