"""Peer P: the GitHub webhook receiver a team would hand-roll instead of running hookhub.

FastAPI + aio-pika, written the way the libraries' docs suggest: verify X-Hub-Signature-256 (one
HMAC, compared in constant time), parse the body into a small pydantic model, publish it persistent
to the exchange in BENCH_EXCHANGE (bound to a quorum queue by bench.ceilings) on a channel with
publisher confirms, and answer 202 once the broker confirmed. No dedup, no CloudEvents, no store.
Not a ceiling: the hub does more per request, and hub / P says what that costs or saves.
GET /readyz answers 200 once the channel is open.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import aio_pika
from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, ValidationError

SECRET = os.environ.get("BENCH_SECRET", "bench-secret").encode()


class Repository(BaseModel):
    id: int
    full_name: str


class Sender(BaseModel):
    login: str


class GitHubEvent(BaseModel):
    """The fields a consumer would route on; everything else is passed through untouched."""

    action: str | None = None
    ref: str | None = None
    repository: Repository
    sender: Sender


state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    connection = await aio_pika.connect_robust(os.environ["BENCH_AMQP_URL"])
    channel = await connection.channel(publisher_confirms=True)
    state["exchange"] = await channel.get_exchange(os.environ["BENCH_EXCHANGE"])
    try:
        yield
    finally:
        state.clear()
        await connection.close()


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    if "exchange" not in state:
        raise HTTPException(503, "not connected")
    return {"status": "ok"}


@app.post("/webhooks/github", status_code=202)
async def github_webhook(
    request: Request,
    x_hub_signature_256: Annotated[str, Header()],
    x_github_event: Annotated[str, Header()],
    x_github_delivery: Annotated[str, Header()],
) -> dict[str, str]:
    body = await request.body()
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), x_hub_signature_256.encode()):
        raise HTTPException(401, "bad signature")
    try:
        event = GitHubEvent.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, "invalid payload") from exc
    message = aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=x_github_delivery,
        type=f"com.github.{x_github_event}",
        headers={"repository": event.repository.full_name, "action": event.action or ""},
    )
    await state["exchange"].publish(message, routing_key=f"com.github.{x_github_event}")
    return {"status": "accepted", "id": x_github_delivery}
