"""Running wrk with one of bench/lua's scripts and reading back the result line they print.

wrk is the load generator because a Python client would saturate a core before the server does;
the Lua scripts make each request unique and count every status, so the numbers include errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent / "lua"
INSTALL_HINT = "wrk is not installed: install the Debian/Ubuntu package with `sudo apt-get install -y wrk`"


def ensure_wrk() -> str:
    """The wrk binary's path, installing Debian's package first when running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found; running `apt-get install -y wrk` ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "install", "-y", "wrk"],
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "wrk"],
        ):
            subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL, timeout=300)
            found = shutil.which("wrk")
            if found:
                return found
    raise SystemExit(INSTALL_HINT)


@dataclass(frozen=True, slots=True)
class WrkSettings:
    """The wrk command line shared by a hub run and the ceiling it is compared with."""

    threads: int = 1
    connections: int = 32
    duration: float = 10.0
    timeout: float = 5.0

    def args(self) -> list[str]:
        return [
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(self.duration))}s",
            f"--timeout={max(1, round(self.timeout))}s",
            "--latency",
        ]


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: completed responses by status, latency percentiles, socket errors."""

    requests: int  # responses received
    sent: int  # requests written (>= requests: the rest were in flight at the end, or timed out)
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    n202: int
    n200: int
    n4xx: int
    n5xx: int
    nother: int
    socket_errors: int
    timeouts: int
    first_bad: str

    @property
    def rate(self) -> float:
        """Responses per second, whatever their status."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def accepted_rate(self) -> float:
        """202 responses per second: the only answers that mean an event was accepted."""
        return self.n202 / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        """Every answer other than 202, plus socket errors and timeouts."""
        return self.requests - self.n202 + self.socket_errors + self.timeouts

    @property
    def unanswered(self) -> int:
        """Requests written that got no answer before wrk stopped (the server may still act on them)."""
        return max(0, self.sent - self.requests)

    def describe_errors(self) -> str:
        parts = [
            f"{n} {label}"
            for n, label in (
                (self.n200, "200 (duplicate)"),
                (self.n4xx, "4xx"),
                (self.n5xx, "5xx"),
                (self.nother, "other status"),
                (self.socket_errors, "socket errors"),
                (self.timeouts, "timeouts"),
            )
            if n
        ]
        text = ", ".join(parts)
        return f"{text}; first: {self.first_bad}" if self.first_bad else text


def run_wrk(url: str, script: str, settings: WrkSettings, env: dict[str, str]) -> WrkResult:
    """Run wrk against `url` with bench/lua/`script`; bounded by its own -d plus a margin."""
    argv = [ensure_wrk(), *settings.args(), "-s", str(LUA_DIR / script), url]
    try:
        proc = subprocess.run(
            argv,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=settings.duration + settings.timeout + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"wrk did not stop by itself: {' '.join(argv)}") from exc
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        output = proc.stdout[-2000:] + proc.stderr[-2000:]
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {' '.join(argv)}\n{output}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    return WrkResult(
        requests=raw["requests"],
        sent=raw["sent"],
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        n202=raw["n202"],
        n200=raw["n200"],
        n4xx=raw["n4xx"],
        n5xx=raw["n5xx"],
        nother=raw["nother"],
        socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"],
        timeouts=raw["timeouts"],
        first_bad=raw["first_bad"],
    )
