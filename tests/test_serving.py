"""The functions as Knative runs them (functions-framework --asgi) and `hookhub run`, as processes."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GITHUB_SECRET = "fn-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hookhub.yaml"
    path.write_text(
        f"""
broker: sqlite:///{tmp_path}/hub.db
store: sqlite:///{tmp_path}/hub.db
archive: file://{tmp_path}/archive
providers:
  gh: {{kind: github, secrets: ["{GITHUB_SECRET}"]}}
producers:
  billing: {{token: producer-token}}
"""
    )
    return path


def serve(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("server did not start within 30 s")


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def github_post(url: str) -> httpx.Response:
    body = json.dumps({"action": "created"}).encode()
    signature = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-Hub-Signature-256": f"sha256={signature}",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    return httpx.post(url, content=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("target", "extra_env"),
    [("webhook", {"HOOKHUB_PROVIDER": "gh"}), ("gh", {})],
    ids=["webhook-target", "provider-name-target"],
)
def test_functions_framework_asgi_serves_a_provider(
    config_file: Path, stop: list[subprocess.Popen[bytes]], target: str, extra_env: dict[str, str]
) -> None:
    port = free_port()
    env = {"HOOKHUB_CONFIG": str(config_file), **extra_env}
    command = [str(BIN / "functions-framework"), "--target", target, "--asgi", "--port", str(port)]
    stop.append(serve(command, env, port))
    response = github_post(f"http://127.0.0.1:{port}/")
    assert response.status_code == 202, response.text
    assert github_post(f"http://127.0.0.1:{port}/").json()["status"] == "accepted"
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200


def test_functions_framework_serves_the_producer_api(
    config_file: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    command = [str(BIN / "functions-framework"), "--target", "events", "--asgi", "--port", str(port)]
    stop.append(serve(command, {"HOOKHUB_CONFIG": str(config_file)}, port))
    event = {"specversion": "1.0", "id": "p-1", "source": "/billing", "type": "com.acme.paid", "data": {}}
    response = httpx.post(
        f"http://127.0.0.1:{port}/",
        content=json.dumps(event),
        headers={"Authorization": "Bearer producer-token", "Content-Type": "application/cloudevents+json"},
    )
    assert response.status_code == 202, response.text


def test_hookhub_run_serves_everything_on_one_port(
    config_file: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    command = [str(BIN / "hookhub"), "run", "--config", str(config_file), "--port", str(port)]
    stop.append(serve(command, {}, port))
    assert github_post(f"http://127.0.0.1:{port}/webhooks/gh").status_code == 202
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["checks"] == {"broker": True, "store": True}
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'hookhub_ingested_events_total{provider="gh",result="accepted"} 1.0' in metrics


def test_hookhub_run_refuses_a_broken_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("providers:\n  gh: {kind: github, secrets: [x], colour: blue}\n")
    result = subprocess.run(
        [str(BIN / "hookhub"), "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "providers.gh.colour" in result.stderr


def wait_until_answering(process: subprocess.Popen[bytes], url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            return httpx.get(url, timeout=1)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("server did not answer within 30 s")


@pytest.mark.parametrize("target", ["webhook", "gh"], ids=["webhook-target", "provider-name-target"])
def test_function_with_a_broken_config_answers_503_logs_once_and_stops_promptly(
    tmp_path: Path, target: str
) -> None:
    path = tmp_path / "hookhub.yaml"
    path.write_text("providers:\n  gh: {kind: github}\n")  # no secrets
    port = free_port()
    command = [str(BIN / "functions-framework"), "--target", target, "--asgi", "--port", str(port)]
    env = {**os.environ, "HOOKHUB_CONFIG": str(path), "HOOKHUB_PROVIDER": "gh"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        assert wait_until_answering(process, f"http://127.0.0.1:{port}/healthz").status_code == 503
        statuses = [github_post(f"http://127.0.0.1:{port}/").status_code for _ in range(3)]
        assert statuses == [503, 503, 503]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert "Traceback" not in stderr
    errors = [
        line for line in stderr.splitlines() if "configuration cannot be loaded" in line and "ERROR" in line
    ]
    assert len(errors) == 1, stderr
    assert "providers.gh" in errors[0] and "secrets is required" in errors[0]


def test_function_logs_the_start_up_summary_once(config_file: Path) -> None:
    port = free_port()
    command = [str(BIN / "functions-framework"), "--target", "events", "--asgi", "--port", str(port)]
    process = serve(command, {"HOOKHUB_CONFIG": str(config_file)}, port)
    try:
        for _ in range(3):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert stderr.count(f"config {config_file}") == 1, stderr
    assert "providers: gh (github)" in stderr and "producers: billing" in stderr
