"""One table, both shapes: a scripted subscriber gets the same attempts, delays and final states
from `hookhub run`'s dispatcher and from the Knative `fanout` function.

Both run on the in-memory broker with a manual clock, so hours of backoff take no real time;
the subscriber is a real HTTP server on 127.0.0.1. The Knative shape is driven the way a
RabbitmqSource drives it: a consumer of the subscription's queue POSTs each due message to the
function in binary mode and acks it on 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookhub.broker.base import Lease, Topology
from hookhub.broker.memory import MemoryBroker
from hookhub.clock import ManualClock
from hookhub.config import parse_config
from hookhub.events import Event
from hookhub.fanout.attempts import PARK_RECHECK_SECONDS
from hookhub.fanout.sender import cloudevent_headers
from hookhub.hub import Hub
from hookhub.store.base import SubscriptionState
from hookhub.web import handle_fanout
from tests.support.subscriber import Step, Subscriber, running_subscriber

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass(frozen=True)
class Case:
    script: tuple[Step, ...]
    # (attempt number, verdict, seconds since the first attempt) for every attempt
    attempts: tuple[tuple[int, str, float], ...]
    state: SubscriptionState = SubscriptionState.ACTIVE
    dead_letters: int = 0
    queued: int = 0  # events still in the subscription's queue at the end
    settings: tuple[tuple[str, Any], ...] = ()  # the subscription's settings besides config()'s


CASES = {
    "200": Case((Step(200),), ((1, "delivered", 0.0),)),
    "500 then 200": Case((Step(500, times=1), Step(200)), ((1, "retry", 0.0), (2, "delivered", 1.0))),
    "500 until dead": Case(
        (Step(500),), ((1, "retry", 0.0), (2, "retry", 1.0), (3, "dead", 3.0)), dead_letters=1
    ),
    "400": Case((Step(400),), ((1, "dead", 0.0),), dead_letters=1),
    "410": Case((Step(410),), ((1, "parked", 0.0),), state=SubscriptionState.DISABLED, queued=1),
    "429 Retry-After 7": Case(
        (Step(429, {"Retry-After": "7"}, times=1), Step(200)), ((1, "retry", 0.0), (2, "delivered", 7.0))
    ),
    "timeout then 200": Case(
        (Step(200, delay=2.0, times=1), Step(200)), ((1, "retry", 0.0), (2, "delivered", 1.0))
    ),
    # failing without a success for disable_after disables it, as a 410 does: the third attempt
    # (3 s after the first failure) is the one past 2 s; its retry waits in the queue
    "500 past disable_after": Case(
        (Step(500),),
        ((1, "retry", 0.0), (2, "retry", 1.0), (3, "retry", 3.0)),
        state=SubscriptionState.DISABLED,
        queued=1,
        settings=(("max_attempts", 10), ("disable_after", "2s")),
    ),
}


def config(url: str, namespace: str, store: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "broker": "memory://",
        "store": store,
        "archive": f"file://{store.removeprefix('sqlite:///')}.archive",
        "namespace": namespace,
        "subscriptions": {
            "s": {
                "url": url,
                "types": ["com.test.#"],
                "secret": SECRET,
                "max_attempts": 3,
                "backoff": {"initial": "1s", "max": "1h", "multiplier": 2, "jitter": 0},
                "timeout": "300ms",
                **(settings or {}),
            }
        },
    }


class KnativeSource:
    """What a RabbitmqSource does: POST each due message to the function; ack on 2xx."""

    def __init__(self, hub: Hub, broker: MemoryBroker) -> None:
        async def function(request: Request) -> Response:
            return await handle_fanout(hub, request)

        app = Starlette(routes=[Route("/{name}", function, methods=["POST"])])
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fanout")
        self.broker = broker
        self.queue = hub.queue_for["s"]

    async def start(self) -> None:
        self.consumer = await self.broker.consume(self.queue, self._push, prefetch=1, lease=30.0)

    async def _push(self, lease: Lease) -> None:
        response = await self.client.post(
            "/s", content=lease.event.data, headers=cloudevent_headers(lease.event)
        )
        if response.is_success:
            await self.broker.ack(lease)
        else:
            await self.broker.release(lease)

    async def close(self) -> None:
        await self.consumer.cancel()
        await self.client.aclose()


@contextlib.asynccontextmanager
async def shape(
    kind: str, url: str, tmp_path: Path, settings: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Hub, ManualClock, MemoryBroker]]:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    clock = ManualClock()
    broker = MemoryBroker(Topology(namespace), clock=clock)
    hub = Hub(
        parse_config(config(url, namespace, f"sqlite:///{tmp_path}/{kind}.db", settings), environ={}),
        broker=broker,
        clock=clock,
    )
    await hub.start(dispatch=kind == "dispatcher")
    source = KnativeSource(hub, broker) if kind == "knative" else None
    if source is not None:
        await source.start()
    try:
        yield hub, clock, broker
    finally:
        if source is not None:
            await source.close()
        await hub.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def run_case(kind: str, case: Case, subscriber: Subscriber, tmp_path: Path) -> dict[str, Any]:
    path = f"/{kind}"
    subscriber.script(*(dataclasses.replace(step) for step in case.script), path=path)  # steps count down
    async with shape(kind, subscriber.url(path), tmp_path, dict(case.settings)) as (hub, clock, broker):
        event = Event(id=uuid.uuid4().hex, source="/test", type="com.test.thing", data=b"{}")
        await hub.ingestor.ingest([event], origin="test")

        async def records() -> list[Any]:
            return await hub.store.attempts.for_event(event.source, event.id)

        await eventually(lambda: _count_at_least(records, 1))
        for n in range(2, len(case.attempts) + 1):
            # the retry is being scheduled: let it land, then move the clock from wake-up to
            # wake-up (lease renewals wake up too) until the next attempt is made
            await asyncio.sleep(0.2)
            for _ in range(20):
                if await _count_at_least(records, n):
                    break
                await eventually(lambda: _has_sleeper(clock))
                await clock.advance(clock.next_wake - clock.now())  # type: ignore[operator]
                await asyncio.sleep(0.1)
            await eventually(lambda n=n: _count_at_least(records, n))
        await asyncio.sleep(0.1)  # nothing more may happen without the clock moving
        made = await records()
        first = made[0].attempted_at
        for letter in await hub.store.attempts.dead_letters("s"):  # replayable as it was received
            assert Event.from_attributes(letter.attributes, letter.data) == event
            assert (letter.attempts, letter.last_status) == (made[-1].attempt, made[-1].status_code)
        depths = await broker.queue_depths()
        return {
            "attempts": tuple((r.attempt, r.verdict, round(r.attempted_at - first, 3)) for r in made),
            "headers": tuple(int(r.headers["hookhub-attempt"]) for r in subscriber.requests(path)),
            "state": (await hub.store.subscriptions.all()).get("s", SubscriptionState.ACTIVE),
            "dead_letters": len(await hub.store.attempts.dead_letters("s")),
            "queued": depths.get(hub.queue_for["s"], 0),
        }


async def _has_sleeper(clock: ManualClock) -> bool:
    return clock.next_wake is not None


async def _count_at_least(records: Callable[[], Awaitable[list[Any]]], n: int) -> bool:
    return len(await records()) >= n


@pytest.fixture
def subscriber() -> Any:
    with running_subscriber() as sub:
        yield sub


@pytest.mark.parametrize("name", list(CASES))
async def test_both_shapes_make_the_same_attempts(name: str, subscriber: Subscriber, tmp_path: Path) -> None:
    case = CASES[name]
    expected = {
        "attempts": case.attempts,
        "headers": tuple(a for a, _, _ in case.attempts),
        "state": case.state,
        "dead_letters": case.dead_letters,
        "queued": case.queued,
    }
    for kind in ("dispatcher", "knative"):
        assert await run_case(kind, case, subscriber, tmp_path) == expected, kind


async def test_a_disabled_subscription_parks_events_for_the_recheck_on_knative(
    subscriber: Subscriber, tmp_path: Path
) -> None:
    """The one shape difference: a RabbitmqSource keeps pushing, so the function defers a parked
    event by PARK_RECHECK_SECONDS (attempt number unchanged), where the dispatcher stops consuming."""
    subscriber.script(Step(410), path="/k")
    async with shape("knative", subscriber.url("/k"), tmp_path) as (hub, clock, _broker):
        event = Event(id="e1", source="/test", type="com.test.thing", data=b"{}")
        await hub.ingestor.ingest([event], origin="test")
        await eventually(lambda: _count_at_least(lambda: hub.store.attempts.for_event("/test", "e1"), 1))
        await eventually(lambda: _has_sleeper(clock))
        assert clock.next_wake == pytest.approx(clock.now() + PARK_RECHECK_SECONDS)
        await clock.advance(PARK_RECHECK_SECONDS)  # comes back, still disabled: parked again, no POST
        await asyncio.sleep(0.2)
        assert len(subscriber.requests("/k")) == 1
        assert len(await hub.store.attempts.for_event("/test", "e1")) == 1
