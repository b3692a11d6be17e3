"""Server subprocesses the bench starts, and always stops, even on an error or Ctrl-C.

Each server gets its own session (process group), so a Ctrl-C in the terminal reaches only the
bench, which then stops its servers in order instead of leaving them half-dead; its output goes to
a log file whose tail is printed when it fails to start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Exactly the server settings `hookhub run` uses, so the ceilings and the peer differ from the hub
# only by the app.
UVICORN_FLAGS = ("--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment minus HOOKHUB_* overrides, which would silently replace the bench config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKHUB_")}
    env.update(extra or {})
    return env


class Server:
    """One server subprocess listening on 127.0.0.1:`port`."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log_path: Path, cwd: Path = ROOT) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, path: str, timeout: float) -> None:
        """Poll GET `path` until it answers 200; fail early if the process dies."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                    f"last log lines:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name} not ready after {timeout:.0f}s (GET {path}: {last}); "
            f"last log lines:\n{self.log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the server's process group, then SIGKILL it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def running(server: Server, env: dict[str, str], ready_path: str, timeout: float) -> Iterator[Server]:
    """Start `server`, wait until it is ready, and stop it however the block ends."""
    server.start(env)
    try:
        server.wait_ready(ready_path, timeout)
        yield server
    finally:
        server.stop()


def uvicorn_server(name: str, app: str, log_dir: Path) -> Server:
    """`app` (module:attribute) under uvicorn with hookhub's flags, one process, on a free port."""
    port = free_port()
    argv = [
        str(VENV_BIN / "python"),
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_FLAGS,
    ]
    return Server(name, argv, port, log_dir / f"{app.split(':')[0].rsplit('.', 1)[-1]}.log")


def bare_asgi_server(log_dir: Path) -> Server:
    """Ceiling A's server: bench.bare_asgi, no broker."""
    return uvicorn_server("bare ASGI (uvicorn)", "bench.bare_asgi:app", log_dir)


def durable_asgi_server(log_dir: Path) -> Server:
    """Ceiling D's server: bench.durable_asgi; reads BENCH_AMQP_URL and BENCH_EXCHANGE."""
    return uvicorn_server("durable ASGI (uvicorn)", "bench.durable_asgi:app", log_dir)


def peer_server(log_dir: Path) -> Server:
    """Peer P's server: bench.peer_fastapi; reads BENCH_AMQP_URL, BENCH_EXCHANGE and BENCH_SECRET."""
    return uvicorn_server("peer FastAPI + aio-pika (uvicorn)", "bench.peer_fastapi:app", log_dir)
