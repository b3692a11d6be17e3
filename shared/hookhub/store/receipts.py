"""Pull receipts: what a pull consumer was handed, so its acknowledgement can be checked and
settled. Issued durably before the events leave; acknowledged once (a conditional UPDATE, so
two concurrent acks of one receipt cannot both settle it)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update

from hookhub.store.engine import Database
from hookhub.store.records import PullReceipt
from hookhub.store.schema import pull_receipt, pull_receipts

_P = pull_receipts
MAX_IDS_PER_STATEMENT = 500


class SqlPullReceipts:
    """The `PullReceipts` over SQLite or PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def issue(self, receipts: Sequence[PullReceipt]) -> None:
        if not receipts:
            return
        rows = [{c.name: getattr(r, c.name) for c in _P.c} for r in receipts]

        def run() -> None:
            with self._db.durable() as conn:
                conn.execute(insert(_P), rows)

        await self._db.run(run, "pull receipt write")

    async def acknowledge(self, subscription: str, receipts: Sequence[str]) -> builtins.list[PullReceipt]:
        ids = builtins.list(dict.fromkeys(receipts))
        if not ids:
            return []

        def run() -> builtins.list[PullReceipt]:
            now = time.time()
            acked: builtins.list[PullReceipt] = []
            with self._db.durable() as conn:
                for start in range(0, len(ids), MAX_IDS_PER_STATEMENT):
                    stmt = (
                        update(_P)
                        .where(
                            _P.c.receipt.in_(ids[start : start + MAX_IDS_PER_STATEMENT]),
                            _P.c.subscription == subscription,
                            _P.c.acked_at.is_(None),
                        )
                        .values({_P.c.acked_at: now})
                        .returning(*_P.c)
                    )
                    acked.extend(pull_receipt(r._mapping) for r in conn.execute(stmt))
            order = {receipt: i for i, receipt in enumerate(ids)}
            acked.sort(key=lambda r: order[r.receipt])
            return acked

        return await self._db.run(run, "pull receipt acknowledgement")

    async def get(self, receipt: str) -> PullReceipt | None:
        def run() -> PullReceipt | None:
            with self._db.engine.connect() as conn:
                row = conn.execute(select(_P).where(_P.c.receipt == receipt)).first()
            return pull_receipt(row._mapping) if row else None

        return await self._db.run(run, "pull receipt read")

    async def forget(self, before: float) -> int:
        def run() -> int:
            with self._db.durable() as conn:
                return int(conn.execute(delete(_P).where(_P.c.issued_at < before)).rowcount)

        return await self._db.run(run, "pull receipt write")
