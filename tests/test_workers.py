"""`hookhub run --workers N`: several whole hubs on one port deliver every event exactly once,
share each subscription's limits, stop gracefully together, and refuse a shape they cannot share."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hookhub.cli import app
from hookhub.config import SubscriptionConfig
from hookhub.fanout.dispatcher import share_of
from tests.support.subscriber import running_subscriber
from tests.test_crash import post_batch, start_hub
from tests.test_serving import free_port

IN_FLIGHT = 4
STALL = 0.5


def test_share_of_divides_limits_so_the_subscriber_sees_the_configured_ones() -> None:
    sub = SubscriptionConfig.model_validate(
        {"url": "http://127.0.0.1:9/", "types": ["#"], "max_in_flight": 5, "rate_limit": 9}
    )
    assert share_of(sub, 1) is sub
    half = share_of(sub, 2)
    assert (half.max_in_flight, half.rate_limit) == (3, 4.5)  # rounded up: a slot each at least
    assert share_of(sub.model_copy(update={"rate_limit": None}), 4).rate_limit is None
    assert share_of(sub, 8).max_in_flight == 1


@pytest.mark.parametrize("key,value", [("broker", "sqlite:///{tmp}/b.db"), ("store", "sqlite:///{tmp}/s.db")])
def test_workers_refuse_an_embedded_broker_or_store(key: str, value: str, tmp_path: Path) -> None:
    config = {
        "broker": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "store": "postgresql://postgres@127.0.0.1:5432/test",
        "archive": f"file://{tmp_path}/archive",
        key: value.format(tmp=tmp_path),
    }
    path = tmp_path / "hookhub.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        app, ["run", "--config", str(path), "--workers", "2", "--port", str(free_port())]
    )
    assert result.exit_code == 2
    assert "--workers needs a" in result.output and key in result.output


def _config(tmp_path: Path, rabbitmq_url: str, postgres_url: str, **more: Any) -> Path:
    config = {
        "broker": rabbitmq_url,
        "store": postgres_url,
        "archive": f"file://{tmp_path}/archive",
        "namespace": f"workers{uuid.uuid4().hex[:8]}",
        **more,
    }
    path = tmp_path / "hookhub.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(config: Path, port: int) -> Any:
    return start_hub(config, port, "--workers", "2")


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_two_workers_deliver_each_event_once_within_the_limits_and_stop_gracefully(
    rabbitmq_url: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    with running_subscriber() as subscriber:
        subscriber.stall(STALL, path="/a")
        a = {"url": subscriber.url("/a"), "types": ["com.acme.#"], "max_in_flight": IN_FLIGHT}
        path = _config(
            tmp_path,
            rabbitmq_url,
            fresh_postgres_url,
            producers={"p": {"token": "t"}},
            subscriptions={"a": a},
        )
        namespace = yaml.safe_load(path.read_text())["namespace"]
        port = free_port()
        hub = _start(path, port)
        try:
            ids: list[str] = []
            for _ in range(4):  # several requests, so both workers take some
                ids += post_batch(port, 10)
            # a full window under way: the two workers together hold max_in_flight, not twice it
            subscriber.wait_for(IN_FLIGHT, timeout=20, path="/a")
            time.sleep(STALL * 0.6)
            first = subscriber.requests("/a")
            under_way = [r for r in first if r.at < first[0].at + STALL * 0.8]
            assert len(under_way) <= IN_FLIGHT
            assert len({r.peer_port for r in first}) >= 2  # both workers deliver

            hub.send_signal(signal.SIGTERM)
            assert hub.wait(40) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
            delivered_before_stop = len(subscriber.requests("/a"))
            assert delivered_before_stop < len(ids), "everything went out before the stop: proves nothing"

            subscriber.ok(path="/a")
            hub = _start(path, port)
            assert subscriber.wait_for_ids(len(ids), timeout=60, path="/a") == set(ids)
            time.sleep(0.5)
            counts = Counter(r.ce_id for r in subscriber.requests("/a"))
            assert [i for i, n in counts.items() if n > 1] == []
        finally:
            hub.terminate()
            hub.wait(40)
            from tests.broker._support import delete_namespace_queues

            delete_namespace_queues(rabbitmq_url, namespace)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_workers_stop_when_their_supervisor_is_killed(
    rabbitmq_url: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    """A SIGKILLed supervisor leaves no orphaned worker delivering and holding the port."""
    path = _config(tmp_path, rabbitmq_url, fresh_postgres_url)
    namespace = yaml.safe_load(path.read_text())["namespace"]
    hub = _start(path, free_port())
    try:
        workers = _children(hub.pid)
        assert len(workers) >= 2
        hub.kill()
        hub.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
            time.sleep(0.2)
        assert not [pid for pid in workers if Path(f"/proc/{pid}/stat").exists()]
    finally:
        for pid in _children(hub.pid) if hub.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        from tests.broker._support import delete_namespace_queues

        delete_namespace_queues(rabbitmq_url, namespace)
