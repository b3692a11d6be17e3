"""`hookhub run` as a new user meets it: clear start-up errors, the start-up log, the example
config delivering to the demo receiver, and the README's first curl working against it."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hookhub.cli import app
from hookhub.config import load_config
from hookhub.demo import demo_mismatches

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "hookhub.example.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Hub:
    """A `hookhub run` process whose stderr is collected line by line while it runs."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(BIN / "hookhub"), "run", *args], cwd=cwd, stderr=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            if self.process.poll() is not None:
                self._reader.join(2)
                break
            time.sleep(0.1)
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    started: list[Hub] = []
    yield started
    for hub in started:
        hub.stop()


def run_and_fail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hookhub"), "run", "--config", str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


# Start-up errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("port", "message"), [("0", "out of range"), ("70000", "out of range")])
def test_port_out_of_range_is_one_clear_message(port: str, message: str) -> None:
    result = run_and_fail("--port", port)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_and_fail("--port", str(port))
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-format", "xml"], "log format must be one of text, json"),
        (["--host", "no.such.host.invalid"], "cannot listen"),
    ],
)
def test_bad_options_are_one_clear_message(args: list[str], message: str) -> None:
    result = run_and_fail(*args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("broker: sqlite:///a.db\nbroker: sqlite:///b.db\n", "line 2, column 1: duplicate key 'broker'"),
        ("providers:\n  pay: {secrets: [a]}\n", "providers.pay.kind: Field required"),
    ],
)
def test_broken_config_is_one_clear_message(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hookhub.yaml"
    path.write_text(text)
    result = subprocess.run(
        [str(BIN / "hookhub"), "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_check_config_prints_warnings(tmp_path: Path) -> None:
    path = tmp_path / "hookhub.yaml"
    path.write_text(
        "providers:\n  stripe: {kind: stripe, secrets: ['${STRIPE_SECRET:-whsec_dev}']}\n"
        "subscriptions:\n  crm: {url: 'http://x/h', types: ['com.strpe.#']}\n"
    )
    result = CliRunner().invoke(app, ["check-config", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "set STRIPE_SECRET" in result.output and "'com.strpe.#'" in result.output


# The start-up log -------------------------------------------------------------------------------


def test_json_start_up_log_names_config_shape_and_subscriptions(tmp_path: Path, hubs: list[Hub]) -> None:
    path = tmp_path / "hookhub.yaml"
    path.write_text(
        f"broker: sqlite:///{tmp_path}/hub.db?password=hunter2\n"
        f"store: sqlite:///{tmp_path}/hub.db\n"
        f"archive: file://{tmp_path}/archive\n"
        "providers:\n  gh: {kind: github, secrets: [s]}\n"
        "subscriptions:\n  crm: {url: 'http://127.0.0.1:9/h', types: ['com.github.#', 'org.nothing.*']}\n"
    )
    hub = Hub(["--config", str(path), "--port", str(free_port()), "--log-format", "json"], tmp_path)
    hubs.append(hub)
    hub.wait_for("Application startup complete")
    records = [json.loads(line) for line in hub.lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert f"config {path}" in messages
    assert any("broker sqlite:///" in m and "password=***" in m for m in messages)
    assert "subscription crm: push to http://127.0.0.1:9/h, types com.github.#, org.nothing.*" in messages
    (warning,) = [r for r in records if "org.nothing" in r["message"] and r["level"] == "warning"]
    assert "known prefixes: com.github" in warning["message"]
    assert not any("hunter2" in line for line in hub.lines)


# The example config, the demo receiver and the README's curl -------------------------------------


def test_example_config_delivers_to_the_demo_receiver_on_the_default_port() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.demo_receiver
    assert [str(s.url) for s in config.subscriptions.values()] == ["http://127.0.0.1:8080/demo/receiver"]
    assert demo_mismatches(config, 8080) == []  # `make run` serves the default --port
    assert demo_mismatches(config, 9090) != []  # another port is announced


def readme_try_it() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Try it") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README 'Try it' has no sh block"
    return match.group(1)


def test_readme_curl_reaches_the_demo_receiver_through_make_run_config(
    tmp_path: Path, hubs: list[Hub]
) -> None:
    """The example config, served on a free port (8080 may be taken here), with the README's
    own snippet: 202 from the hub, then the demo receiver logs the signed delivery."""
    port = free_port()
    config = tmp_path / "hookhub.yaml"
    config.write_text(EXAMPLE.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    hub = Hub(["--config", str(config), "--port", str(port)], tmp_path)  # var/ lands in tmp_path
    hubs.append(hub)
    hub.wait_for("Application startup complete")
    assert "Content-Type: application/json" in readme_try_it()
    snippet = readme_try_it().replace("localhost:8080", f"localhost:{port}")
    result = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=30)
    assert "HTTP/1.1 202" in result.stdout, result.stdout + result.stderr
    line = hub.wait_for("demo receiver got")
    assert "com.stripe.invoice.paid evt_1 (attempt 1, signature valid for crm)" in line
    assert hub.wait_for("development secrets in use").count("STRIPE_WEBHOOK_SECRET") == 1
    assert hub.wait_for(r"webhooks: POST http://127\.0\.0\.1:\d+/webhooks/<name> for stripe")
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200


def test_make_run_passes_config_and_args() -> None:
    result = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "run", "CONFIG=my own.yaml", "ARGS=--port 9090"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "hookhub run --config 'my own.yaml' --port 9090" in result.stdout, result.stdout + result.stderr
    default = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "run"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert "hookhub run --config 'hookhub.example.yaml'" in default.stdout


def test_demo_receiver_tells_valid_invalid_and_unsigned_deliveries_apart() -> None:
    from hookhub.demo import signed_by
    from hookhub.signing import sign

    config = load_config(EXAMPLE, environ={})
    secret = config.subscriptions["crm"].secret
    assert secret is not None
    body = b'{"id":"evt_1"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}
    good = sign(secret.get_secret_value(), "msg_1", 1700000000, body)
    assert signed_by(config, {**headers, "webhook-signature": good}, body) == "valid for crm"
    assert signed_by(config, {**headers, "webhook-signature": good}, body + b" ") == "invalid"
    assert signed_by(config, headers, body) == "unsigned"
