"""`hookhub archiver`: the archiver's Deployment on Knative, as a real process on the SQLite broker.

Events published by another process end up in the archive; nothing is delivered (the push
subscription's queue keeps its events); SIGTERM writes what the process holds and stops it cleanly,
so every event is either archived or still queued for the next archiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import yaml

from hookhub.archive import open_archive
from hookhub.config import load_config
from hookhub.events import Event
from hookhub.hub import Hub
from tests.test_serving import BIN, ROOT, free_port


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "hookhub.yaml"
    config = {
        "broker": f"sqlite:///{tmp_path}/broker.db",
        "store": f"sqlite:///{tmp_path}/store.db",
        "archive": f"file://{tmp_path}/archive",
        "namespace": f"arch{uuid.uuid4().hex[:8]}",
        # a push subscription nobody serves: the archiver must not try to deliver to it
        "subscriptions": {"crm": {"url": "http://127.0.0.1:9/hooks", "types": ["com.acme.#"]}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_archiver(config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            str(BIN / "hookhub"),
            "archiver",
            "--config",
            str(config),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the archiver did not become ready")


def events(n: int) -> list[Event]:
    return [
        Event(id=uuid.uuid4().hex, source="/archiver-cli", type="com.acme.order.created", data=b"{}")
        for _ in range(n)
    ]


async def archived_ids(config_path: Path) -> list[str]:
    archive = open_archive(load_config(config_path).archive)
    try:
        async with contextlib.aclosing(archive.scan(0, 4e9)) as rows:
            return [e.id async for e, _ in rows]
    finally:
        await archive.close()


async def test_archiver_archives_only_and_stops_on_sigterm(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    port = free_port()
    archiver = start_archiver(config_path, port)
    producer = Hub(load_config(config_path))  # another process's hub publishing, as ingest would
    try:
        await producer.start()
        first = events(40)
        await producer.broker.publish(first)
        deadline = time.monotonic() + 20
        while sorted(await archived_ids(config_path)) != sorted(e.id for e in first):
            assert time.monotonic() < deadline, "the archiver did not archive the events"
            await asyncio.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200

        # SIGTERM right after more events arrive: what the process took is written before it exits
        second = events(40)
        await producer.broker.publish(second)
        await asyncio.sleep(0.3)
        archiver.send_signal(signal.SIGTERM)
        code = archiver.wait(20)
        stderr = archiver.stderr.read().decode() if archiver.stderr else ""
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), stderr
        assert "Traceback" not in stderr, stderr

        depths = await producer.broker.queue_depths()
        archive_queue = producer.topology.archive_queue
        stored = await archived_ids(config_path)
        assert set(stored) <= {e.id for e in first + second}
        # nothing lost: each event is archived or still queued for the next archiver
        assert len(set(stored)) + depths.get(archive_queue, 0) >= len(first) + len(second)
        assert len(set(stored)) > len(first), "SIGTERM dropped the batch it held instead of writing it"
        # nothing delivered: the subscription's queue still holds every event
        assert depths[producer.queue_of("crm")] == len(first) + len(second)
    finally:
        if archiver.poll() is None:
            archiver.kill()
            archiver.wait()
        await producer.close()
