"""The Knative function behind a raw RabbitMQ consumer, as a RabbitmqSource drives it: the source
reads the subscription queue itself, so it sees retries when RabbitMQ's coarse delay tiers let
them out, possibly before they are due. `Retry-After: 3` goes through the 2 s tier: the function
must send the early copy back for the last second rather than attempt it early."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookhub.config import parse_config
from hookhub.events import Event
from hookhub.hub import Hub
from hookhub.web import handle_fanout
from tests.http.conftest import base_config, delete_namespace
from tests.support.subscriber import Step, Subscriber, running_subscriber

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def subscriber() -> Any:
    with running_subscriber() as sub:
        yield sub


def pushed_headers(props: Any) -> dict[str, str]:
    """What the source turns an AMQP message into: its ce- headers, and the content type."""
    headers = {
        k: v.decode() if isinstance(v, bytes) else str(v)
        for k, v in (props.headers or {}).items()
        if k.startswith("ce-")
    }
    if props.content_type:
        headers["content-type"] = props.content_type
    return headers


async def test_an_event_pushed_before_its_retry_is_due_is_not_attempted_early(
    rabbitmq_url: str, tmp_path: Path, namespace: str, subscriber: Subscriber
) -> None:
    subscriber.script(Step(429, {"Retry-After": "3"}, times=1), Step(200), path="/k")
    config = base_config(rabbitmq_url, f"sqlite:///{tmp_path}/store.db", namespace)
    config["subscriptions"] = {"k": {"url": subscriber.url("/k"), "types": ["com.test.#"], "timeout": "1s"}}
    hub = Hub(parse_config(config, environ={}))
    await hub.start()

    async def function(request: Request) -> Response:
        return await handle_fanout(hub, request)

    app = Starlette(routes=[Route("/{name}", function, methods=["POST"])])
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://f") as client:
            event = Event(id=uuid.uuid4().hex, source="/test", type="com.test.thing", data=b"{}")
            await hub.ingestor.ingest([event], origin="test")
            pushes = 0
            deadline = asyncio.get_running_loop().time() + 20
            while len(subscriber.requests("/k")) < 2:
                assert asyncio.get_running_loop().time() < deadline, "the retry never came"
                method, props, body = await asyncio.to_thread(channel.basic_get, hub.queue_for["k"])
                if method is None:
                    await asyncio.sleep(0.05)
                    continue
                pushes += 1
                response = await client.post("/k", content=body, headers=pushed_headers(props))
                assert response.status_code == 200, response.text
                channel.basic_ack(method.delivery_tag)
        first, second = subscriber.requests("/k")
        assert [first.headers["hookhub-attempt"], second.headers["hookhub-attempt"]] == ["1", "2"]
        assert second.at - first.at >= 2.9
        assert pushes == 2  # the first, then the copy the 2 s tier let out early, held for the last second
    finally:
        connection.close()
        await hub.close()
        await delete_namespace(rabbitmq_url, hub)
