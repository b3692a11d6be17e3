"""`/admin/replays`: resend an archived interval to one subscription as a background job (or a
dry run that only counts), follow its progress, cancel it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from hookhub.admin.auth import AdminHub
from hookhub.admin.models import (
    JOB_ID_PATTERN,
    NAME_PATTERN,
    DryRunOut,
    JobList,
    JobOut,
    ReplayIn,
    Responses,
    SampleEvent,
    check_interval,
    error_response,
    parse_time,
)
from hookhub.admin.routes_subscriptions import find_subscription
from hookhub.errors import NotFound
from hookhub.events import Event
from hookhub.store.records import ReplayJob

router = APIRouter(prefix="/replays", tags=["replays"])
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the job's id (32 hex digits)")]
SAMPLE_SIZE = 10
_MISSING: Responses = {404: error_response("no such replay job")}


def job_out(job: ReplayJob) -> JobOut:
    return JobOut.model_validate(
        {
            "id": job.id,
            "subscription": job.subscription,
            "start": job.start,
            "end": job.end,
            "state": job.state,
            "scanned": job.scanned,
            "sent": job.sent,
            "error": job.error,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "finished_at": job.finished_at,
        }
    )


def _event_time(event: Event) -> float | None:
    try:
        return parse_time(event.time)
    except ValueError:  # a leap second, say: shown as unknown rather than failing the dry run
        return None


def sample_out(event: Event) -> SampleEvent:
    return SampleEvent.model_validate(
        {"id": event.id, "source": event.source, "type": event.type, "time": _event_time(event)}
    )


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": DryRunOut, "description": "`dry_run`: what the job would send, nothing sent"},
        404: error_response("no such subscription"),
    },
    summary="resend the archived events of [from, to) that match the subscription's types",
)
async def submit(hub: AdminHub, body: ReplayIn) -> Any:
    check_interval(body.start, body.end, ("from", "to"))
    await find_subscription(hub, body.subscription)
    if body.dry_run:
        dry = await hub.replays.dry_run(body.subscription, body.start, body.end)
        out = DryRunOut.model_validate(
            {
                "count": dry.count,
                "sample": [sample_out(e) for e in dry.sample[:SAMPLE_SIZE]],
                "first": dry.first,
                "last": dry.last,
                "start": body.start,
                "end": body.end,
            }
        )
        return JSONResponse(out.model_dump(mode="json", by_alias=True), status_code=200)
    return job_out(await hub.replays.submit(body.subscription, body.start, body.end))


@router.get("", response_model=JobList, summary="replay jobs, newest first")
async def list_jobs(
    hub: AdminHub,
    subscription: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    return JobList(replays=[job_out(j) for j in await hub.store.jobs.list(subscription, limit)])


@router.get("/{job_id}", response_model=JobOut, responses=_MISSING)
async def get_job(hub: AdminHub, job_id: JobId) -> JobOut:
    job = await hub.store.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no replay job {job_id!r}")
    return job_out(job)


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses=_MISSING,
    summary="cancel a queued or running job (a finished one is returned as it is)",
)
async def cancel_job(hub: AdminHub, job_id: JobId) -> JobOut:
    job = await hub.replays.cancel(job_id)
    if job is None:
        raise NotFound(f"no replay job {job_id!r}")
    return job_out(job)
