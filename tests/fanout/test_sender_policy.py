"""One delivery attempt against real local HTTP servers, and the retry policy after it."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from hookhub.config import SubscriptionConfig
from hookhub.events import Event
from hookhub.fanout.policy import Decision, Verdict, backoff_delay, decide
from hookhub.fanout.sender import USER_AGENT, AttemptResult, Sender, delivery_id, parse_retry_after
from tests.support.subscriber import Subscriber, running_subscriber

SECRET = "whsec_" + base64.b64encode(b"delivery-test-signing-key-32byte").decode()


def subscription(url: str = "http://127.0.0.1:1/", **overrides: Any) -> SubscriptionConfig:
    return SubscriptionConfig.model_validate({"url": url, "types": ["#"], **overrides})


def make_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "id": "evt_" + os.urandom(6).hex(),
        "source": "/providers/stripe",
        "type": "com.stripe.invoice.paid",
        "data": b'{"id": "evt_1", "amount": 4200}',
        "datacontenttype": "application/json",
        "correlationid": "corr-1",
    }
    fields.update(overrides)
    return Event(**fields)


@pytest.fixture
def sub() -> Iterator[Subscriber]:
    with running_subscriber() as s:
        yield s


@pytest.fixture
async def deliverer() -> AsyncIterator[Sender]:
    d = Sender()
    yield d
    await d.close()


async def post(
    deliverer: Sender, url: str, event: Event | None = None, attempt: int = 1, **overrides: Any
) -> AttemptResult:
    event = event or make_event()
    return await deliverer.post(
        "crm", subscription(url, **overrides), event, attempt=attempt, delivery_id=delivery_id("crm", event)
    )


# The request on the wire ---------------------------------------------------------------------


async def test_cloudevents_binary_mode_signed_per_standard_webhooks(
    sub: Subscriber, deliverer: Sender
) -> None:
    event = make_event()
    result = await post(deliverer, sub.url("/hooks"), event, attempt=3, secret=SECRET)
    assert result.status == 200 and result.error is None and result.latency_ms > 0
    [received] = sub.requests()
    h = received.headers
    assert received.method == "POST" and received.path == "/hooks"
    assert h["ce-specversion"] == "1.0"
    assert (h["ce-id"], h["ce-source"], h["ce-type"]) == (event.id, event.source, event.type)
    assert h["ce-time"] == event.time and h["ce-correlationid"] == "corr-1"
    assert "ce-subject" not in h and "ce-dataschema" not in h
    assert h["Content-Type"] == "application/json"
    assert h["webhook-id"] == delivery_id("crm", event)
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 5
    assert h["hookhub-attempt"] == "3"
    assert h["User-Agent"] == USER_AGENT and USER_AGENT.startswith("hookhub/")
    assert received.body == event.data
    # the official library accepts the signature
    assert Webhook(SECRET).verify(received.body, received.header_dict()) == {"id": "evt_1", "amount": 4200}
    # no secret travels, only its signature
    assert SECRET not in str(received.header_dict()) and SECRET.removeprefix("whsec_") not in str(h)
    assert "Cookie" not in h and "Authorization" not in h


async def test_body_is_byte_identical_and_content_type_as_received(
    sub: Subscriber, deliverer: Sender
) -> None:
    data = bytes(range(256)) + b'\r\n{"a":  1 }\n'
    event = make_event(data=data, datacontenttype="application/x-custom; charset=latin-1")
    await post(deliverer, sub.url(), event, secret=SECRET)
    [received] = sub.requests()
    assert received.body == data
    assert received.headers["Content-Type"] == "application/x-custom; charset=latin-1"


async def test_no_content_type_without_one_and_no_signature_without_a_secret(
    sub: Subscriber, deliverer: Sender
) -> None:
    await post(deliverer, sub.url(), make_event(datacontenttype=None))
    [received] = sub.requests()
    assert "Content-Type" not in received.headers
    assert "webhook-signature" not in received.headers
    assert "webhook-id" in received.headers and "webhook-timestamp" in received.headers


async def test_optional_attributes_extensions_and_header_encoding(sub: Subscriber, deliverer: Sender) -> None:
    event = make_event(
        subject="invoices/42 ünïcode",
        dataschema="https://schemas.example/invoice.json",
        extensions={"traceparent": "00-abc-def-01", "tenant": "acme"},
    )
    await post(deliverer, sub.url(), event)
    h = sub.requests()[0].headers
    assert h["ce-subject"] == "invoices/42%20%C3%BCn%C3%AFcode"  # CloudEvents HTTP binding §3.1.3.2
    assert h["ce-dataschema"] == "https://schemas.example/invoice.json"
    assert h["ce-traceparent"] == "00-abc-def-01" and h["ce-tenant"] == "acme"


async def test_no_cookies_are_kept(sub: Subscriber, deliverer: Sender) -> None:
    sub.status(200, {"Set-Cookie": "session=abc; Path=/"})
    await post(deliverer, sub.url())
    await post(deliverer, sub.url())
    assert [r.headers.get("Cookie") for r in sub.requests()] == [None, None]


async def test_connections_are_kept_alive(sub: Subscriber, deliverer: Sender) -> None:
    for _ in range(5):
        assert (await post(deliverer, sub.url())).status == 200
    assert len({r.peer_port for r in sub.requests()}) == 1


async def test_concurrent_posts_are_not_capped_by_the_deliverer(sub: Subscriber, deliverer: Sender) -> None:
    sub.stall(0.3)
    started = time.monotonic()
    results = await asyncio.gather(*[post(deliverer, sub.url()) for _ in range(150)])
    assert {r.status for r in results} == {200}
    assert time.monotonic() - started < 3  # 150 x 0.3 s in parallel, not in series (or in 100s)
    assert len(sub.requests()) == 150


# Answers and failures ------------------------------------------------------------------------


async def test_a_redirect_is_not_followed(deliverer: Sender) -> None:
    with running_subscriber() as first, running_subscriber() as elsewhere:
        first.redirect(elsewhere.url("/stolen"))
        result = await post(deliverer, first.url(), secret=SECRET)
        assert result.status == 302
        assert result.error is not None and "redirects are not followed" in result.error
        await asyncio.sleep(0.1)
        assert elsewhere.requests() == []
    assert decide(result, 1, subscription()).verdict is Verdict.RETRY


async def test_timeout_on_a_stalling_subscriber(sub: Subscriber, deliverer: Sender) -> None:
    sub.stall(5)
    started = time.monotonic()
    result = await post(deliverer, sub.url(), timeout="300ms")
    assert time.monotonic() - started < 2
    assert result.status is None and result.error == "timeout after 0.3s"
    assert 250 <= result.latency_ms < 2000


async def test_connection_refused_on_a_closed_port(sub: Subscriber, deliverer: Sender) -> None:
    url = sub.url()
    assert (await post(deliverer, url)).status == 200
    sub.stop()
    # stop() blocked this loop: let it see the pooled connection's close, as it would in real life
    await asyncio.sleep(0.05)
    result = await post(deliverer, url)
    assert result.status is None and result.error == "connection refused"
    sub.start()  # the subscriber comes back on the same port: deliveries resume
    assert (await post(deliverer, url)).status == 200


async def test_error_text_keeps_the_start_of_the_body_only(sub: Subscriber, deliverer: Sender) -> None:
    sub.status(500, body=b"database   exploded\n" + b"x" * 500_000)
    result = await post(deliverer, sub.url())
    assert result.status == 500 and result.retry_after is None
    assert result.error is not None and result.error.startswith("HTTP 500: database exploded xxx")
    assert len(result.error) <= 220
    sub.status(404)
    assert (await post(deliverer, sub.url())).error == "HTTP 404"


async def test_retry_after_seconds_on_429_and_http_date_on_503(sub: Subscriber, deliverer: Sender) -> None:
    sub.status(429, {"Retry-After": "7"})
    assert (await post(deliverer, sub.url())).retry_after == 7.0
    sub.status(503, {"Retry-After": formatdate(time.time() + 120, usegmt=True)})
    retry_after = (await post(deliverer, sub.url())).retry_after
    assert retry_after is not None and 115 <= retry_after <= 121
    sub.status(500, {"Retry-After": "7"})  # only 429 and 503 carry a meaningful Retry-After
    assert (await post(deliverer, sub.url())).retry_after is None


async def test_the_session_follows_the_running_loop(sub: Subscriber) -> None:
    deliverer = Sender()
    assert (await post(deliverer, sub.url())).status == 200
    await deliverer.close()
    assert (await post(deliverer, sub.url())).status == 200  # reopened after close
    await deliverer.close()


# Delivery ids --------------------------------------------------------------------------------


def test_delivery_id_is_stable_and_distinct_per_subscription() -> None:
    event = make_event(id="evt_1", source="/providers/stripe")
    assert delivery_id("crm", event) == delivery_id("crm", make_event(id="evt_1", data=b"other"))
    # a fixed value: the same in every process and release (subscribers deduplicate on it)
    assert delivery_id("crm", event) == "msg_rlff74634fnja5yv5wu7jlachw"
    assert delivery_id("warehouse", event) != delivery_id("crm", event)
    assert delivery_id("crm", make_event(id="evt_1", source="/providers/other")) != delivery_id("crm", event)
    assert len(delivery_id("crm", event)) == 30


# The policy ----------------------------------------------------------------------------------


def result(status: int | None, retry_after: float | None = None) -> AttemptResult:
    return AttemptResult(status, 12.0, None if status and status < 300 else "err", retry_after)


NO_JITTER: dict[str, Any] = {
    "backoff": {"initial": "1s", "max": "60s", "multiplier": 2, "jitter": 0},
    "max_attempts": 5,
}


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert decide(result(status), 5, subscription(**NO_JITTER)) == Decision(Verdict.DELIVERED)


@pytest.mark.parametrize("attempt", [1, 5])
def test_410_disables_the_subscription(attempt: int) -> None:
    assert decide(result(410), attempt, subscription(**NO_JITTER)) == Decision(Verdict.PARKED, disable=True)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 408, 413, 422])
def test_other_4xx_is_dead_at_once(status: int) -> None:
    assert decide(result(status), 1, subscription(**NO_JITTER)) == Decision(Verdict.DEAD)


@pytest.mark.parametrize("status", [None, 429, 500, 502, 503, 504, 301, 302, 307])
def test_retryable_failures_back_off_exponentially_then_die(status: int | None) -> None:
    sub = subscription(**NO_JITTER)
    delays = [decide(result(status), attempt, sub).delay for attempt in range(1, 5)]
    assert [decide(result(status), a, sub).verdict for a in range(1, 5)] == [Verdict.RETRY] * 4
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert decide(result(status), 5, sub) == Decision(Verdict.DEAD)  # attempt == max_attempts
    assert decide(result(status), 6, sub) == Decision(Verdict.DEAD)


def test_backoff_is_capped_at_max() -> None:
    sub = subscription(backoff={"initial": "1s", "max": "10s", "multiplier": 3, "jitter": 0}, max_attempts=50)
    assert [decide(result(500), a, sub).delay for a in (1, 2, 3, 4, 30)] == [1.0, 3.0, 9.0, 10.0, 10.0]


def test_huge_multipliers_do_not_overflow() -> None:
    sub = subscription(
        backoff={"initial": "1s", "max": "1h", "multiplier": 1e300, "jitter": 0}, max_attempts=100
    )
    assert decide(result(500), 99, sub).delay == 3600.0


@pytest.mark.parametrize("jitter", [1.0, 0.5, 0.1])
def test_jitter_bounds(jitter: float) -> None:
    sub = subscription(backoff={"initial": "4s", "max": "1h", "multiplier": 2, "jitter": jitter})
    full = 8.0  # attempt 2
    assert decide(result(503), 2, sub, rng=lambda: 0.0).delay == full
    lowest = decide(result(503), 2, sub, rng=lambda: 0.999999).delay
    assert lowest == pytest.approx(full * (1 - jitter), abs=1e-4)
    assert decide(result(503), 2, sub, rng=lambda: 0.5).delay == pytest.approx(full * (1 - jitter / 2))
    samples = [decide(result(503), 2, sub).delay for _ in range(2_000)]
    assert all(full * (1 - jitter) <= d <= full for d in samples)
    assert max(samples) - min(samples) > full * jitter * 0.8  # actually spread, not constant


def test_default_backoff_is_full_jitter() -> None:
    delays = {decide(result(500), 1, subscription()).delay for _ in range(200)}
    assert all(0.0 <= d <= 1.0 for d in delays) and len(delays) > 100


def test_retry_after_replaces_the_backoff_unjittered_and_bounded() -> None:
    sub = subscription(**NO_JITTER)
    assert decide(result(429, retry_after=30), 1, sub) == Decision(Verdict.RETRY, 30.0)
    assert decide(result(503, retry_after=0), 3, sub) == Decision(Verdict.RETRY, 0.0)
    assert decide(result(429, retry_after=600), 1, sub) == Decision(
        Verdict.RETRY, 600.0
    )  # beyond backoff.max
    assert decide(result(429, retry_after=86400), 1, sub) == Decision(Verdict.RETRY, 3600.0)  # a bogus date
    jittered = subscription(backoff={"initial": "1s", "max": "60s", "jitter": 1})
    assert decide(result(429, retry_after=30), 1, jittered, rng=lambda: 0.9).delay == 30.0
    assert decide(result(429, retry_after=30), 5, sub) == Decision(Verdict.DEAD)  # the limit still holds


def test_backoff_delay_directly() -> None:
    backoff = subscription(**NO_JITTER).backoff
    assert backoff_delay(backoff, 1) == 1.0 and backoff_delay(backoff, 7) == 60.0


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(formatdate(now + 60, usegmt=True), now=now) == pytest.approx(60, abs=1)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after("") is None
