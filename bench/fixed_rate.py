"""An open-loop, fixed-rate webhook client: latency as a provider sending at a steady pace sees it.

wrk is closed-loop: when the server stalls, it stops sending, and the stall hides in a few slow
samples (coordinated omission). Here request i is due at start + i/rate whatever happened before,
and its latency is measured from that due time, so a stall shows up in every request it delayed.
The run is bounded: `rate * duration` requests, then at most `drain_s` seconds to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import aiohttp

from bench import payloads


@dataclass(frozen=True, slots=True)
class FixedRateResult:
    """Latencies from the scheduled send time, in ms, and what the server answered."""

    target_rate: float
    scheduled: int
    completed: int
    accepted: int  # 202 responses
    statuses: dict[str, int]
    errors: int  # exceptions and unfinished requests
    first_error: str
    achieved_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    max_send_lag_ms: float  # how late the client itself was in starting a request
    # Request i carried id f"{run_id}-{i}" and was due at started + i / target_rate
    # (time.perf_counter), so another process's receive log can be matched against it.
    run_id: str = ""
    started: float = 0.0


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


async def _run(
    base_url: str, path: str, rate: float, duration: float, connections: int, drain_s: float, expect: int
) -> FixedRateResult:
    body = payloads.webhook_body()
    base_headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": payloads.github_signature(body),
    }
    run_id = uuid.uuid4().hex[:12]
    total = int(rate * duration)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    max_lag = 0.0
    last_done = 0.0
    url = base_url + path

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(i: int, due: float) -> None:
            nonlocal last_done
            headers = {**base_headers, "X-GitHub-Delivery": f"{run_id}-{i}"}
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[str(resp.status)] += 1
                    if resp.status != expect:
                        errors.append(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            last_done = time.perf_counter()
            latencies.append(last_done - due)

        async def warm() -> None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(base_url + "/healthz") as resp:
                    await resp.read()

        # Open a few connections before the clock starts, so connection setup is not the p99.
        await asyncio.gather(*(warm() for _ in range(4)))

        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.05
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            max_lag = max(max_lag, time.perf_counter() - due)
            task = asyncio.create_task(send(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            _done, unfinished = await asyncio.wait(tasks, timeout=drain_s)
            for task in unfinished:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*unfinished, return_exceptions=True)
            if unfinished:
                errors.append(f"{len(unfinished)} requests unfinished after {drain_s:.0f}s")

    completed = sum(statuses.values())
    elapsed = last_done - start
    lat_ms = sorted(x * 1000 for x in latencies)
    return FixedRateResult(
        target_rate=rate,
        scheduled=total,
        completed=completed,
        accepted=statuses.get(str(expect), 0),
        statuses=dict(statuses),
        errors=total - statuses.get(str(expect), 0),  # other statuses, exceptions, unfinished
        first_error=errors[0] if errors else "",
        achieved_rate=completed / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(lat_ms, 50),
        p95_ms=percentile(lat_ms, 95),
        p99_ms=percentile(lat_ms, 99),
        max_ms=lat_ms[-1] if lat_ms else 0.0,
        max_send_lag_ms=max_lag * 1000,
        run_id=run_id,
        started=start,
    )


def run_fixed_rate(
    base_url: str,
    path: str = "/webhooks/github",
    rate: float = 1000,
    duration: float = 10,
    connections: int = 64,
    drain_s: float = 10,
    expect: int = 202,
) -> FixedRateResult:
    """Send `rate` signed GitHub webhooks per second to `base_url + path` for `duration` seconds;
    `expect` is the status that counts as accepted (the fan-out bench's sink answers 200)."""
    try:
        import uvloop
    except ImportError:  # the plain loop still works, only with more client overhead
        return asyncio.run(_run(base_url, path, rate, duration, connections, drain_s, expect))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(base_url, path, rate, duration, connections, drain_s, expect))
