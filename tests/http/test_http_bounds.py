"""The HTTP layer's bounds, over real sockets: huge headers, stalled clients, hang-ups.

Each holds under `hookhub run` (uvicorn + hookhub's protocol) and, where the handlers enforce
it, under a functions-framework target too (plain uvicorn + httptools, as its worker runs).
"""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest

from hookhub import serving, web
from tests.http.conftest import PRODUCER_TOKEN, LiveServer

EVENT = json.dumps(
    {"specversion": "1.0", "id": "e-1", "source": "/billing", "type": "com.acme.paid"}
).encode()


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def events_head(server: LiveServer, path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {PRODUCER_TOKEN}\r\nContent-Type: application/cloudevents+json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def post_event(server: LiveServer, path: str, event_id: str) -> httpx.Response:
    body = EVENT.replace(b'"e-1"', json.dumps(event_id).encode())
    return httpx.post(
        server.url(path),
        content=body,
        headers={"Authorization": f"Bearer {PRODUCER_TOKEN}", "Content-Type": "application/cloudevents+json"},
        timeout=10,
    )


@pytest.fixture(params=["run", "function"])
def server(request: pytest.FixtureRequest) -> tuple[LiveServer, str]:
    """Either server, with the path the producer API has on it."""
    if request.param == "run":
        return request.getfixturevalue("run_server"), "/events"
    return request.getfixturevalue("function_server"), "/"


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "BODY_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(serving, "HEADER_TIMEOUT_SECONDS", 1.0)


def test_headers_over_the_limit_get_431(server: tuple[LiveServer, str]) -> None:
    live, path = server
    head = events_head(live, path, len(EVENT)).replace(b"\r\n\r\n", b"\r\n")
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(40))  # 40 kB > 32 kB
    with connect(live) as sock:
        sock.sendall(head + padding + b"\r\n" + EVENT)
        response = read_all(sock)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert b"headers larger than" in response
    assert post_event(live, path, "after-431").status_code == 202


def test_headers_within_the_limit_are_served(server: tuple[LiveServer, str]) -> None:
    live, path = server
    response = httpx.post(
        live.url(path),
        content=EVENT,
        headers={
            "Authorization": f"Bearer {PRODUCER_TOKEN}",
            "Content-Type": "application/cloudevents+json",
            "X-Big": "b" * 24_000,
        },
    )
    assert response.status_code == 202, response.text


def test_a_huge_header_is_cut_off_before_it_is_buffered(run_server: LiveServer) -> None:
    """httptools alone buffers a header of any size (a 50 MB one was accepted): the protocol
    refuses once MAX_HEADER_BYTES have arrived, long before the client is done sending."""
    started = time.monotonic()
    sent = 0
    with connect(run_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        with pytest.raises(OSError):  # reset or broken pipe: the server closed on us
            for _ in range(20_000):  # up to 20 MB
                sock.sendall(b"h" * 1024)
                sent += 1024
        response = read_all(sock)
    assert sent < 5_000_000 and time.monotonic() - started < 10
    assert response == b"" or response.startswith(b"HTTP/1.1 431 ")
    assert httpx.get(run_server.url("/healthz")).status_code == 200


@pytest.mark.usefixtures("short_timeouts")
def test_stalled_body_gets_408_and_a_closed_connection_without_blocking_others(
    server: tuple[LiveServer, str],
) -> None:
    live, path = server
    with connect(live) as stalled:
        stalled.sendall(events_head(live, path, len(EVENT)) + EVENT[:10])  # then nothing
        started = time.monotonic()
        others = [post_event(live, path, f"other-{i}") for i in range(3)]
        assert [r.status_code for r in others] == [202] * 3
        assert time.monotonic() - started < 0.9  # served while the stalled body was pending
        response = read_all(stalled)  # returns only once the server closed the connection
        waited = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert b"body not received within 1s" in response
    assert 0.9 < waited < 5


@pytest.mark.usefixtures("short_timeouts")
def test_stalled_headers_get_408_and_an_idle_connection_is_closed(run_server: LiveServer) -> None:
    with connect(run_server) as stalled, connect(run_server) as idle, connect(run_server) as kept:
        stalled.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        started = time.monotonic()
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # a kept-alive connection...
        first = b""
        while not first.endswith(b'"ok"}'):
            first += kept.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # ...whose next request stalls
        assert httpx.get(run_server.url("/healthz")).status_code == 200
        assert read_all(stalled).startswith(b"HTTP/1.1 408 ")
        assert read_all(kept).startswith(b"HTTP/1.1 408 ")
        assert read_all(idle) == b""  # opened, never used: closed without an answer
        assert time.monotonic() - started < 5


def test_client_hanging_up_mid_body_is_one_log_line(
    server: tuple[LiveServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    live, path = server
    caplog.set_level(logging.INFO)
    with connect(live) as sock:
        sock.sendall(events_head(live, path, 1000) + b'{"specversion"')
    deadline = time.monotonic() + 10
    while not [r for r in caplog.records if r.name == "hookhub.http"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # anything else (a traceback) would come right after
    ours = [r for r in caplog.records if r.name == "hookhub.http"]
    assert len(ours) == 1, caplog.text
    assert ours[0].levelno == logging.INFO and ours[0].status == 499  # type: ignore[attr-defined]
    assert "disconnected" in ours[0].reason  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
