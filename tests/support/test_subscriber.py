"""The test subscriber itself: scripted answers, recording, waiting, vanishing and coming back."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.subscriber import Step, Subscriber, running_subscriber


@pytest.fixture
def sub() -> Iterator[Subscriber]:
    with running_subscriber() as s:
        yield s


def post(url: str, body: bytes = b"{}", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """A plain POST that never follows redirects, so the test sees exactly what was answered."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def test_records_every_request_and_answers_200_by_default(sub: Subscriber) -> None:
    status, _ = post(sub.url("/hooks?x=1"), b'{"a": 1}', {"ce-id": "e1", "X-Custom": "v"})
    assert status == 200
    [received] = sub.wait_for(1)
    assert (received.method, received.path, received.query) == ("POST", "/hooks", "x=1")
    assert received.body == b'{"a": 1}'
    assert received.headers["x-custom"] == "v"  # case-insensitive
    assert received.ce_id == "e1"
    assert received.header_dict()["X-Custom"] == "v"
    assert abs(received.at - time.time()) < 5


def test_fail_times_then_ok(sub: Subscriber) -> None:
    sub.fail_times(2, status=503)
    assert [post(sub.url())[0] for _ in range(4)] == [503, 503, 200, 200]


def test_fail_times_zero_is_ok(sub: Subscriber) -> None:
    sub.fail_times(0)
    assert post(sub.url())[0] == 200


def test_status_with_headers_and_body(sub: Subscriber) -> None:
    sub.status(429, {"Retry-After": "7"})
    status, headers = post(sub.url())
    assert status == 429 and headers["Retry-After"] == "7"
    sub.status(410)
    assert post(sub.url())[0] == 410


def test_behaviour_is_per_path_with_a_default(sub: Subscriber) -> None:
    sub.status(400, path="/bad")
    sub.status(500)  # every other path
    sub.ok(path="/good")
    assert post(sub.url("/bad"))[0] == 400
    assert post(sub.url("/good"))[0] == 200
    assert post(sub.url("/other"))[0] == 500
    assert [r.path for r in sub.requests("/bad")] == ["/bad"]
    assert len(sub.requests()) == 3


def test_script_of_steps(sub: Subscriber) -> None:
    sub.script(Step(500, times=1), Step(429, {"Retry-After": "1"}, times=1), Step(201))
    assert [post(sub.url())[0] for _ in range(4)] == [500, 429, 201, 201]


def test_stall_delays_the_answer_but_records_on_arrival(sub: Subscriber) -> None:
    sub.stall(0.5)
    started = time.monotonic()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(post(sub.url())[0]))
    thread.start()
    sub.wait_for(1, timeout=0.4)  # recorded before the answer
    thread.join()
    assert result == [200]
    assert time.monotonic() - started >= 0.5


def test_redirect(sub: Subscriber) -> None:
    sub.redirect("http://127.0.0.1:1/elsewhere")
    status, headers = post(sub.url())
    assert status == 302 and headers["Location"] == "http://127.0.0.1:1/elsewhere"


def test_stop_refuses_connections_and_start_comes_back_on_the_same_port(sub: Subscriber) -> None:
    port = sub.port
    assert post(sub.url())[0] == 200
    sub.stop()
    assert not sub.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    sub.start()
    assert sub.port == port
    assert post(sub.url())[0] == 200
    assert len(sub.requests()) == 2


def test_stop_closes_keep_alive_connections() -> None:
    with running_subscriber() as sub:
        parts = urlsplit(sub.url())
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
        conn.request("POST", "/", body=b"x")
        conn.getresponse().read()
        sub.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("POST", "/", body=b"x")
            conn.getresponse().read()
        conn.close()


def test_stop_does_not_wait_for_a_stalled_request(sub: Subscriber) -> None:
    sub.stall(30)
    outcome: list[object] = []

    def stalled_post() -> None:
        try:
            outcome.append(post(sub.url())[0])
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=stalled_post, daemon=True)
    thread.start()
    sub.wait_for(1)
    started = time.monotonic()
    sub.stop()
    assert time.monotonic() - started < 3
    thread.join(5)
    assert outcome and not isinstance(outcome[0], int)  # the client saw the connection drop


def test_wait_for_times_out_with_a_message(sub: Subscriber) -> None:
    post(sub.url())
    with pytest.raises(TimeoutError, match="got 1 requests"):
        sub.wait_for(2, timeout=0.1)


def test_wait_for_distinct_ids(sub: Subscriber) -> None:
    for ce_id in ("a", "a", "b"):
        post(sub.url(), headers={"ce-id": ce_id})
    assert sub.wait_for_ids(2) == {"a", "b"}
    with pytest.raises(TimeoutError):
        sub.wait_for_ids(3, timeout=0.1)


def test_reset_forgets_requests_and_scripts(sub: Subscriber) -> None:
    sub.status(500)
    post(sub.url())
    sub.reset()
    assert sub.requests() == []
    assert post(sub.url())[0] == 200


def test_url_needs_a_started_subscriber() -> None:
    sub = Subscriber()
    try:
        with pytest.raises(RuntimeError):
            sub.url()
    finally:
        sub.close()


async def test_usable_from_an_async_test(sub: Subscriber) -> None:
    sub.fail_times(1, status=500)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for ce_id in ("x", "y"):
            async with session.post(sub.url("/a"), data=b"1", headers={"ce-id": ce_id}) as response:
                statuses.append(response.status)
    assert statuses == [500, 200]
    assert len(await sub.wait_for_async(2, path="/a")) == 2
    assert await sub.wait_for_ids_async(2) == {"x", "y"}
    with pytest.raises(TimeoutError):
        await sub.wait_for_async(3, timeout=0.05)
