"""The fan-out ceiling: a bare aiohttp client doing only the HTTP part of hookhub's deliveries.

One process, one `ClientSession` configured like hookhub's `Sender` (no connection cap,
keep-alive, no cookies, no auto headers or decompression, a per-request timeout), `concurrency`
posters each sending one request after the other, with the same body and the same header set
(CloudEvents binary mode, a Standard Webhooks signature, `hookhub-attempt`). No broker, no store:
the hub's deliveries/s divided by this, at the same number in flight, is how much of the HTTP
budget the hub's own work (consume, log the attempt, ack) takes.

    python -m bench.bare_client URL --requests 20000 --concurrency 16 [--json]

`bench.fanout` runs it in its own process, as the hub is one, so it has a GIL to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass

import aiohttp

from bench import payloads

SIGNING_SECRET = "whsec_" + base64.b64encode(b"bench-fanout-signing-key-32bytes").decode()


@dataclass(frozen=True, slots=True)
class ClientResult:
    """Requests answered 2xx per second over the client's own wall time, and its CPU use."""

    requests: int
    ok: int
    statuses: dict[str, int]
    errors: int
    first_error: str
    seconds: float
    cpu_s: float
    concurrency: int
    run_id: str

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks `webhook-signature`, as hookhub computes it for every delivery."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


async def post_all(url: str, requests: int, concurrency: int, timeout: float = 10.0) -> ClientResult:
    """Send `requests` POSTs to `url` with `concurrency` in flight; count what came back."""
    body = payloads.event_data()
    key = base64.b64decode(SIGNING_SECRET.removeprefix("whsec_"))
    run_id = uuid.uuid4().hex[:12]
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    next_index = 0
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30.0)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "hookhub-bench"},
        skip_auto_headers=("Content-Type", "Accept-Encoding"),
        auto_decompress=False,
        trust_env=False,
    )

    async def poster() -> None:
        nonlocal next_index
        while next_index < requests:
            i = next_index
            next_index += 1
            event_id = f"{run_id}-{i}"
            ts = int(time.time())
            headers = {
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-source": payloads.EVENT_SOURCE,
                "ce-type": payloads.EVENT_TYPE,
                "ce-time": "2024-01-01T00:00:00.000Z",
                "ce-correlationid": event_id,
                "Content-Type": "application/json",
                "webhook-id": "msg_" + event_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(key, "msg_" + event_id, ts, body),
                "hookhub-attempt": "1",
            }
            try:
                async with session.post(
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:
                    await resp.read()
                    statuses[str(resp.status)] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(concurrency)))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await session.close()
    ok = sum(n for status, n in statuses.items() if status.startswith("2"))
    bad = [f"HTTP {s} x{n}" for s, n in statuses.items() if not s.startswith("2")]
    return ClientResult(
        requests=requests,
        ok=ok,
        statuses=dict(statuses),
        errors=requests - ok,
        first_error=(errors or bad or [""])[0],
        seconds=seconds,
        cpu_s=cpu,
        concurrency=concurrency,
        run_id=run_id,
    )


def run(url: str, requests: int, concurrency: int) -> ClientResult:
    """The client on uvloop, the loop `hookhub run` serves and delivers on."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(post_all(url, requests, concurrency))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_client", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by bench.fanout)")
    args = parser.parse_args(argv)
    result = run(args.url, args.requests, args.concurrency)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"{result.rate:,.0f} req/s ({result.ok:,} of {result.requests:,} answered 2xx in "
            f"{result.seconds:.2f}s, {result.concurrency} in flight, client CPU "
            f"{result.cpu_s / result.seconds:.0%}); {result.first_error}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
