"""Faults lose nothing: a hub killed with SIGKILL in the middle of deliveries and restarted
still delivers every accepted event to every matching subscriber."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.subscriber import running_subscriber
from tests.test_serving import BIN, ROOT, free_port

EVENTS = 300


def start_hub(config: Path, port: int, *more: str) -> subprocess.Popen[bytes]:
    """`hookhub run` on `port`, ready; `more` are further options (e.g. --workers 2)."""
    process = subprocess.Popen(
        [str(BIN / "hookhub"), "run", f"--config={config}", f"--port={port}", "--log-level=warning", *more],
        cwd=ROOT,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("hub did not become ready")


def post_batch(port: int, n: int) -> list[str]:
    events = [
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/crash",
            "type": "com.acme.order.created",
            "data": {},
        }
        for _ in range(n)
    ]
    response = httpx.post(
        f"http://127.0.0.1:{port}/events",
        content=json.dumps(events),
        headers={"Authorization": "Bearer t", "Content-Type": "application/cloudevents-batch+json"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return [e["id"] for e in events]


@pytest.mark.parametrize("broker", ["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_sigkill_mid_delivery_loses_nothing(
    broker: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    broker_url = (
        f"sqlite:///{tmp_path}/hub.db" if broker == "sqlite" else request.getfixturevalue("rabbitmq_url")
    )
    namespace = f"crash{uuid.uuid4().hex[:8]}"
    with running_subscriber() as subscriber:
        subscriber.stall(0.02)  # slow enough that a kill lands in the middle of deliveries
        config: dict[str, Any] = {
            "broker": broker_url,
            "store": f"sqlite:///{tmp_path}/hub.db",
            "archive": f"file://{tmp_path}/archive",
            "namespace": namespace,
            "producers": {"p": {"token": "t"}},
            "subscriptions": {
                name: {
                    "url": subscriber.url(f"/{name}"),
                    "types": ["com.acme.#"],
                    "timeout": "2s",
                    "max_in_flight": 8,
                    "backoff": {"initial": "100ms", "max": "1s"},
                }
                for name in ("a", "b")
            },
        }
        path = tmp_path / "hookhub.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        hub = start_hub(path, port)
        try:
            accepted = [i for _ in range(EVENTS // 100) for i in post_batch(port, 100)]
            subscriber.wait_for_ids(40, timeout=30, path="/a")
            hub.send_signal(signal.SIGKILL)
            hub.wait(10)
            delivered_before = len(subscriber.ce_ids("/a")) + len(subscriber.ce_ids("/b"))
            assert delivered_before < 2 * EVENTS, "the kill came too late to prove anything"
            hub = start_hub(path, port)
            for name in ("a", "b"):
                assert subscriber.wait_for_ids(EVENTS, timeout=90, path=f"/{name}") == set(accepted)
        finally:
            hub.kill()
            hub.wait(10)
            if broker == "rabbitmq":
                from tests.broker._support import delete_namespace_queues

                delete_namespace_queues(broker_url, namespace)
