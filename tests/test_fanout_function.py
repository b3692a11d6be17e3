"""The Knative fan-out function (`--target fanout`), driven as its event source would drive it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from functions_framework.aio import create_asgi_app

from hookhub.hub import close_hub, get_hub
from tests.support.subscriber import Subscriber, running_subscriber

ROOT = Path(__file__).resolve().parents[1]


def cloudevent(event_id: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/billing",
        "ce-type": "com.acme.invoice.paid",
        "content-type": "application/json",
    }


@pytest.fixture
async def function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Subscriber]]:
    with running_subscriber() as subscriber:
        config = {
            "broker": f"sqlite:///{tmp_path}/hub.db",
            "store": f"sqlite:///{tmp_path}/hub.db",
            "archive": f"file://{tmp_path}/archive",
            "subscriptions": {
                "crm": {
                    "url": subscriber.url("/crm"),
                    "types": ["com.acme.#"],
                    "max_attempts": 3,
                    "backoff": {"initial": "10s", "max": "1m", "jitter": 0},  # due in 10 s exactly
                },
            },
        }
        path = tmp_path / "hookhub.yaml"
        path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("HOOKHUB_CONFIG", str(path))
        app = create_asgi_app(target="fanout", source=str(ROOT / "main.py"))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fanout"
        ) as client:
            yield client, subscriber
        await close_hub()


async def test_delivered_event_is_acked_with_200(function: tuple[httpx.AsyncClient, Subscriber]) -> None:
    client, subscriber = function
    response = await client.post("/crm", content=b'{"a": 1}', headers=cloudevent("e1"))
    assert response.status_code == 200 and response.json()["verdict"] == "delivered"
    (received,) = subscriber.requests("/crm")
    assert received.body == b'{"a": 1}' and received.headers["ce-id"] == "e1"


async def test_retry_is_scheduled_on_the_broker_and_numbered_from_the_log(
    function: tuple[httpx.AsyncClient, Subscriber],
) -> None:
    client, subscriber = function
    subscriber.status(503, path="/crm")
    first = await client.post("/crm", content=b"{}", headers=cloudevent("e2"))
    assert first.status_code == 200 and first.json() | {"delivery_id": None} == {
        "verdict": "retry",
        "attempt": 1,
        "delivery_id": None,
    }
    hub = await get_hub()
    assert (await hub.broker.queue_depths())[hub.queue_for["crm"]] == 1  # the rescheduled copy
    # the source pushes the copy again before its retry is due (RabbitMQ's delay tiers are
    # coarse): it goes back for the rest of its wait, and nothing is POSTed early
    early = await client.post("/crm", content=b"{}", headers=cloudevent("e2"))
    assert early.status_code == 200 and early.json()["verdict"] == "retry"
    assert len(subscriber.requests("/crm")) == 1
    assert (await hub.broker.queue_depths())[hub.queue_for["crm"]] == 2


async def test_unknown_subscription_and_missing_attributes(
    function: tuple[httpx.AsyncClient, Subscriber],
) -> None:
    client, _ = function
    assert (await client.post("/nosuch", content=b"{}", headers=cloudevent("e3"))).status_code == 404
    assert (await client.post("/crm", content=b"{}", headers={"ce-id": "x"})).status_code == 400


async def test_probes_answer_on_the_function(function: tuple[httpx.AsyncClient, Subscriber]) -> None:
    client, _ = function
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
