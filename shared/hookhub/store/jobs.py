"""Replay jobs, shared by every replica. A job runs under one owner, which proves it is alive by
saving progress; a job whose heartbeat went stale is taken over by the next replica that asks.
Every change is a conditional UPDATE checked by its row count, so two replicas racing for a job
cannot both win, and a cancelled job tells its runner to stop at its next save."""

from __future__ import annotations

import builtins
import time

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.engine import Connection

from hookhub.store.engine import Database
from hookhub.store.records import JOB_CANCELLED, JOB_QUEUED, JOB_RUNNING, ReplayJob
from hookhub.store.schema import replay_job, replay_jobs, short

_J = replay_jobs
_UNFINISHED = (JOB_QUEUED, JOB_RUNNING)
CLAIM_CANDIDATES = 8  # claimable jobs tried per call before giving up to the other replicas


def _claimable(now: float, stale_after: float) -> ColumnElement[bool]:
    """Queued, or running with a heartbeat older than `stale_after` (its owner died)."""
    stale = or_(_J.c.heartbeat_at.is_(None), _J.c.heartbeat_at < now - stale_after)
    return or_(_J.c.state == JOB_QUEUED, and_(_J.c.state == JOB_RUNNING, stale))


def _read(conn: Connection, job_id: str) -> ReplayJob | None:
    row = conn.execute(select(_J).where(_J.c.id == job_id)).first()
    return replay_job(row._mapping) if row else None


class SqlReplayJobs:
    """The `ReplayJobs` over SQLite or PostgreSQL. Writes are rare (a save per batch of events
    resent) and durable: a job's progress must not go back after a crash."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, job: ReplayJob) -> None:
        def run() -> None:
            values = {c.name: getattr(job, c.name) for c in _J.c}
            values[_J.c.error.name] = short(job.error)
            with self._db.durable() as conn:
                conn.execute(insert(_J).values(values))

        await self._db.run(run, "replay job write")

    async def get(self, job_id: str) -> ReplayJob | None:
        def run() -> ReplayJob | None:
            with self._db.engine.connect() as conn:
                return _read(conn, job_id)

        return await self._db.run(run, "replay job read")

    async def list(self, subscription: str | None = None, limit: int = 50) -> builtins.list[ReplayJob]:
        def run() -> builtins.list[ReplayJob]:
            stmt = select(_J)
            if subscription is not None:
                stmt = stmt.where(_J.c.subscription == subscription)
            stmt = stmt.order_by(_J.c.created_at.desc(), _J.c.id.desc()).limit(max(limit, 0))
            with self._db.engine.connect() as conn:
                return [replay_job(r._mapping) for r in conn.execute(stmt)]

        return await self._db.run(run, "replay job read")

    async def save_progress(
        self, job_id: str, *, scanned: int, sent: int, cursor: str | None, owner: str
    ) -> bool:
        def run() -> bool:
            now = time.time()
            stmt = (
                update(_J)
                .where(_J.c.id == job_id, _J.c.state == JOB_RUNNING, _J.c.owner == owner)
                .values(
                    {
                        _J.c.scanned: scanned,
                        _J.c.sent: sent,
                        _J.c.cursor: cursor,
                        _J.c.heartbeat_at: now,
                        _J.c.updated_at: now,
                    }
                )
            )
            with self._db.durable() as conn:
                return bool(conn.execute(stmt).rowcount == 1)

        return await self._db.run(run, "replay job write")

    async def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        def run() -> None:
            now = time.time()
            stmt = (
                update(_J)
                .where(_J.c.id == job_id, _J.c.state.in_(_UNFINISHED))  # a cancel stays a cancel
                .values(
                    {_J.c.state: state, _J.c.error: short(error), _J.c.finished_at: now, _J.c.updated_at: now}
                )
            )
            with self._db.durable() as conn:
                conn.execute(stmt)

        await self._db.run(run, "replay job write")

    async def cancel(self, job_id: str) -> ReplayJob | None:
        def run() -> ReplayJob | None:
            now = time.time()
            stmt = (
                update(_J)
                .where(_J.c.id == job_id, _J.c.state.in_(_UNFINISHED))
                .values({_J.c.state: JOB_CANCELLED, _J.c.finished_at: now, _J.c.updated_at: now})
            )
            with self._db.durable() as conn:
                conn.execute(stmt)
                return _read(conn, job_id)

        return await self._db.run(run, "replay job write")

    async def claim(self, owner: str, stale_after: float) -> ReplayJob | None:
        def run() -> ReplayJob | None:
            now = time.time()
            with self._db.engine.connect() as conn:  # a read of its own: see `_take`
                candidates = conn.execute(
                    select(_J.c.id)
                    .where(_claimable(now, stale_after))
                    .order_by(_J.c.created_at, _J.c.id)
                    .limit(CLAIM_CANDIDATES)
                ).scalars()
                ids = builtins.list(candidates)
            for job_id in ids:
                job = self._take(job_id, owner, stale_after)
                if job is not None:
                    return job
            return None

        return await self._db.run(run, "replay job claim")

    def _take(self, job_id: str, owner: str, stale_after: float) -> ReplayJob | None:
        """Compare-and-set: the UPDATE re-checks the job is still claimable, so of two replicas
        racing for it exactly one changes the row. The transaction writes first, so SQLite takes
        its write lock at once instead of upgrading a read snapshot another writer outdated."""
        now = time.time()
        stmt = (
            update(_J)
            .where(_J.c.id == job_id, _claimable(now, stale_after))
            .values(
                {
                    _J.c.state: JOB_RUNNING,
                    _J.c.owner: owner,
                    _J.c.heartbeat_at: now,
                    _J.c.updated_at: now,
                    _J.c.finished_at: None,
                }
            )
        )
        with self._db.durable() as conn:
            if conn.execute(stmt).rowcount != 1:
                return None
            return _read(conn, job_id)
