"""The pull endpoints over HTTP: the consumer's JSON, its token, and every bad request a 4xx.

The app mounts `pull_routes` over a real broker, store and `Puller`; the hub around them is the
narrow `PullHub` the routes ask for (config and queue per pull subscription)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from hookhub.broker import Binding, Broker, Topology
from hookhub.broker.memory import MemoryBroker
from hookhub.broker.sqlite import SQLiteBroker
from hookhub.config import SubscriptionConfig
from hookhub.errors import Rejection
from hookhub.events import Event
from hookhub.pull import Puller
from hookhub.pull_api import MAX_BODY_BYTES, AckBody, PullBody, Target, parse_body, pull_routes

TOKEN, OTHER_TOKEN = "orders-token", "audit-token"


@dataclass
class ApiHub:
    pull: Puller
    targets: dict[str, Target]
    broker: Broker

    def pull_target(self, name: str) -> Target | None:
        return self.targets.get(name)


def make_app(kind: str, tmp_path: Any, namespace: str) -> Starlette:
    topology = Topology(namespace)
    configs = {
        "orders": SubscriptionConfig(mode="pull", types=["com.example.#"], token=TOKEN),
        "audit": SubscriptionConfig(mode="pull", types=["com.example.#"], token=OTHER_TOKEN),
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from hookhub.store import open_store

        broker: Broker = (
            MemoryBroker(topology)
            if kind == "memory"
            else SQLiteBroker(f"sqlite:///{tmp_path}/broker.db", topology)
        )
        store = open_store(f"sqlite:///{tmp_path}/store.db")
        await store.start()
        targets = {name: (c, topology.subscription_queue(name)) for name, c in configs.items()}
        await broker.start([Binding(queue, tuple(c.types)) for c, queue in targets.values()])
        app.state.hub = ApiHub(Puller(broker, store.receipts, store.attempts), targets, broker)
        try:
            yield
        finally:
            await broker.close()
            await store.close()

    app = Starlette(lifespan=lifespan)
    app.router.routes.extend(pull_routes(lambda: app.state.hub))
    return app


@pytest.fixture(params=["memory", "sqlite"])
async def api(
    request: pytest.FixtureRequest, tmp_path: Any, namespace: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(request.param, tmp_path, namespace)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            client.hub = app.state.hub  # type: ignore[attr-defined]
            yield client


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_pull_and_ack_over_http(api: httpx.AsyncClient) -> None:
    sent = [
        Event(
            "e-json", "tests/api", "com.example.created", b'{"amount": 5, "tags": ["a"]}', "application/json"
        ),
        Event("e-bin", "tests/api", "com.example.blob", b"\x00\xffraw", "application/octet-stream"),
        Event("e-bad", "tests/api", "com.example.broken", b"{not json", "application/json; charset=utf-8"),
        Event(
            "e-ext",
            "tests/api",
            "com.example.ext",
            b"[1]",
            "application/cloudevents+json",
            subject="s1",
            extensions={"tenant": "acme"},
        ),
    ]
    await api.hub.broker.publish(sent)  # type: ignore[attr-defined]
    answer = await api.post("/subscriptions/orders/pull", json={"max": 10, "wait": "2s"}, headers=auth())
    assert answer.status_code == 200, answer.text
    events = {e["id"]: e for e in answer.json()["events"]}
    assert set(events) == {"e-json", "e-bin", "e-bad", "e-ext"}
    first = events["e-json"]
    assert first["data"] == {"amount": 5, "tags": ["a"]} and "data_base64" not in first
    assert first["specversion"] == "1.0" and first["source"] == "tests/api"
    assert first["type"] == "com.example.created" and first["datacontenttype"] == "application/json"
    assert first["attempt"] == 1 and first["receipt"] and first["time"] and first["correlationid"] == "e-json"
    assert (
        base64.b64decode(events["e-bin"]["data_base64"]) == b"\x00\xffraw" and "data" not in events["e-bin"]
    )
    assert base64.b64decode(events["e-bad"]["data_base64"]) == b"{not json"
    assert events["e-ext"]["data"] == [1] and events["e-ext"]["tenant"] == "acme"
    assert events["e-ext"]["subject"] == "s1"
    assert not any(key.startswith("hookhub") for e in events.values() for key in e)
    receipts = [e["receipt"] for e in events.values()]
    acked = await api.post("/subscriptions/orders/ack", json={"ids": receipts}, headers=auth())
    assert (acked.status_code, acked.json()) == (200, {"acked": 4})
    again = await api.post("/subscriptions/orders/ack", json={"ids": receipts}, headers=auth())
    assert again.json() == {"acked": 0}


async def test_an_empty_body_pulls_with_the_defaults(api: httpx.AsyncClient) -> None:
    answer = await api.post("/subscriptions/orders/pull", headers=auth())
    assert (answer.status_code, answer.json()) == (200, {"events": []})


async def test_the_subscriptions_own_token_is_required(api: httpx.AsyncClient) -> None:
    for headers in (
        {},
        auth("wrong"),
        auth(OTHER_TOKEN),
        {"Authorization": TOKEN},
        {"Authorization": "Basic x"},
    ):
        for path in ("/subscriptions/orders/pull", "/subscriptions/orders/ack"):
            answer = await api.post(path, json={"ids": ["a"]}, headers=headers)
            assert answer.status_code == 401, (headers, path)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert isinstance(answer.json()["error"], str)
    ok = await api.post("/subscriptions/orders/pull", json={}, headers={"authorization": f"bearer {TOKEN}"})
    assert ok.status_code == 200


async def test_unknown_subscription_is_404(api: httpx.AsyncClient) -> None:
    answer = await api.post("/subscriptions/nope/pull", json={}, headers=auth())
    assert answer.status_code == 404 and "nope" in answer.json()["error"]
    assert (await api.post("/subscriptions/nope/ack", json={"ids": ["a"]}, headers=auth())).status_code == 404
    assert (await api.get("/subscriptions/orders/pull", headers=auth())).status_code == 405


async def test_a_store_outage_is_503(api: httpx.AsyncClient, tmp_path: Any) -> None:
    await api.hub.broker.publish([Event("e-1", "tests/api", "com.example.created", b"{}")])  # type: ignore[attr-defined]
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("DROP TABLE pull_receipts")
    answer = await api.post("/subscriptions/orders/pull", json={"wait": "1s"}, headers=auth())
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert answer.json() == {"error": "store unavailable; retry"}


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("pull", b"not json", 400, "JSON"),
        ("pull", b"[]", 400, "object"),
        ("pull", b'{"max": NaN}', 400, "JSON"),
        ("pull", b'{"max": 0}', 422, "max"),
        ("pull", b'{"max": 1001}', 422, "max"),
        ("pull", b'{"max": "5"}', 422, "max"),
        ("pull", b'{"max": 2.5}', 422, "max"),
        ("pull", b'{"wait": "31s"}', 422, "wait"),
        ("pull", b'{"wait": "soon"}', 422, "wait"),
        ("pull", b'{"wait": -1}', 422, "wait"),
        ("pull", b'{"wait": true}', 422, "wait"),
        ("pull", b'{"wait": null}', 422, "wait"),
        ("pull", b'{"limit": 5}', 422, "limit"),
        ("ack", b"", 400, "JSON"),
        ("ack", b"{}", 422, "ids"),
        ("ack", b'{"ids": []}', 422, "ids"),
        ("ack", b'{"ids": "abc"}', 422, "ids"),
        ("ack", b'{"ids": [1]}', 422, "ids.0"),
        ("ack", json.dumps({"ids": ["x" * 65]}).encode(), 422, "ids.0"),
        ("ack", json.dumps({"ids": ["a\u0000b"]}).encode(), 422, "ids.0"),
        ("ack", json.dumps({"ids": [f"r{i}" for i in range(1001)]}).encode(), 422, "ids"),
        ("ack", b"\xff\xfe", 400, "JSON"),
        ("ack", b"[" * 100_000, 400, "JSON"),
    ],
)
async def test_bad_requests_are_4xx_with_a_clear_error(
    api: httpx.AsyncClient, path: str, body: bytes, status: int, says: str
) -> None:
    answer = await api.post(f"/subscriptions/orders/{path}", content=body, headers=auth())
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]


async def test_an_oversized_body_is_413(api: httpx.AsyncClient) -> None:
    body = b'{"ids": ["' + b"a" * MAX_BODY_BYTES + b'"]}'
    answer = await api.post("/subscriptions/orders/ack", content=body, headers=auth())
    assert answer.status_code == 413


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
FIELDS = st.dictionaries(st.sampled_from(["max", "wait", "ids", "other"]), JSON, max_size=3)
BODIES = (
    st.binary(max_size=300)
    | JSON.map(lambda v: json.dumps(v).encode())
    | FIELDS.map(lambda v: json.dumps(v).encode())
)


@settings(max_examples=400, deadline=None)
@given(body=BODIES)
def test_the_body_parsers_accept_or_refuse_with_a_4xx(body: bytes) -> None:
    for model in (PullBody, AckBody):
        try:
            parsed = parse_body(model, body)
        except Rejection as exc:
            assert 400 <= exc.status < 500 and exc.message
        else:
            if isinstance(parsed, PullBody):
                assert 1 <= parsed.max <= 1000 and 0 <= parsed.wait <= 30
            else:
                assert isinstance(parsed, AckBody) and 1 <= len(parsed.ids) <= 1000


@dataclass
class SyncApi:
    """An app and its client on a loop of their own, for a synchronous hypothesis test."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient

    def post(self, path: str, body: bytes) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, content=body, headers=auth()))


@pytest.fixture
def sync_api(tmp_path: Any, namespace: str) -> Iterator[SyncApi]:
    app = make_app("memory", tmp_path, namespace)
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        loop.run_until_complete(stack.enter_async_context(app.router.lifespan_context(app)))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = loop.run_until_complete(
            stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://hub"))
        )
        yield SyncApi(loop, client)
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300)
    | FIELDS.filter(lambda v: "wait" not in v).map(lambda v: json.dumps(v).encode())
)
def test_any_body_over_http_is_never_a_5xx(sync_api: SyncApi, body: bytes) -> None:
    for path in ("pull", "ack"):
        answer = sync_api.post(f"/subscriptions/orders/{path}", body)
        assert answer.status_code == 200 or 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/json"
