"""A normal stop loses and repeats nothing: SIGTERM (or Ctrl-C) with POSTs under way lets them
finish, records them, and exits; after a restart no event is POSTed twice and every attempt
number is right. The same holds for a pause with POSTs under way. On both brokers."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.subscriber import Subscriber, running_subscriber
from tests.test_crash import post_batch, start_hub
from tests.test_serving import free_port

IN_FLIGHT = 10
STALL = 1.5  # seconds each POST takes: long enough for the signal to land while they are under way


def write_config(tmp_path: Path, broker_url: str, subscriber: Subscriber, namespace: str) -> Path:
    config: dict[str, Any] = {
        "broker": broker_url,
        "store": f"sqlite:///{tmp_path}/store.db",
        "archive": f"file://{tmp_path}/archive",
        "namespace": namespace,
        "producers": {"p": {"token": "t"}},
        "subscriptions": {
            "a": {
                "url": subscriber.url("/a"),
                "types": ["com.acme.#"],
                "timeout": "5s",
                "max_in_flight": IN_FLIGHT,
                "backoff": {"initial": "100ms", "max": "1s"},
            }
        },
    }
    path = tmp_path / "hookhub.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def broker_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db"
    return str(request.getfixturevalue("rabbitmq_url"))


def cleanup(kind: str, broker_url: str, namespace: str) -> None:
    if kind == "rabbitmq":
        from tests.broker._support import delete_namespace_queues

        delete_namespace_queues(broker_url, namespace)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_with_posts_under_way_neither_loses_nor_repeats(
    kind: str, sig: signal.Signals, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    broker_url = broker_for(kind, tmp_path, request)
    namespace = f"stop{uuid.uuid4().hex[:8]}"
    with running_subscriber() as subscriber:
        subscriber.stall(STALL, path="/a")
        path = write_config(tmp_path, broker_url, subscriber, namespace)
        port = free_port()
        hub = start_hub(path, port)
        try:
            accepted = post_batch(port, IN_FLIGHT * 3)
            subscriber.wait_for(IN_FLIGHT, timeout=20, path="/a")  # a full window under way
            stopped_at = time.monotonic()
            hub.send_signal(sig)
            assert hub.wait(30) in (0, -sig, 128 + sig)  # uvicorn re-raises the signal once stopped
            # it waited for the POSTs under way rather than dropping them
            assert time.monotonic() - stopped_at >= STALL * 0.5
            first_run = len(subscriber.requests("/a"))
            assert first_run < len(accepted), "every event went out before the stop: proves nothing"

            subscriber.ok(path="/a")
            hub = start_hub(path, port)
            assert subscriber.wait_for_ids(len(accepted), timeout=30, path="/a") == set(accepted)
            time.sleep(0.5)  # anything repeated would arrive now
            received = subscriber.requests("/a")
            repeats = [i for i, n in Counter(r.ce_id for r in received).items() if n > 1]
            assert repeats == []
            assert {r.headers["hookhub-attempt"] for r in received} == {"1"}
        finally:
            hub.kill()
            hub.wait(10)
            cleanup(kind, broker_url, namespace)
