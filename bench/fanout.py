"""Fan-out benchmark (issue #3): hub deliveries/s and end-to-end latency as ratios to ceilings.

    .venv/bin/python -m bench.fanout [--broker amqp://...|sqlite] [--store postgres|sqlite]
                                     [--only throughput|latency|ceilings] [--events 20000]

Everything is aimed at 127.0.0.1; every subscriber is bench.sink, a raw ASGI app in its own
uvicorn process that answers 200 and logs (path, event id, receive time).
  ceilings   C1/C10: bench.bare_client, one aiohttp process posting the same body and headers
             to the sink with 16 / 160 requests in flight (max_in_flight x 1 / 10 subscriptions;
             --max-in-flight changes both, the targets assume the default 16);
             L: the fixed-rate client posting the webhooks straight to the sink.
  latency    1,000 signed webhooks/s open-loop for --duration s into `hookhub run` with one
             active subscription; latency = sink receive time - the request's due time.
  throughput the subscriptions start paused (set in the store before the hub starts), the queues
             are loaded through POST /events (100-event batches), then resumed: deliveries/s of
             the one hub process draining --events to 1 subscription, and --events/4 to each of
             10 subscriptions; every event must reach every subscription exactly once.
Rates are taken from the sink's receive times over the middle 80% of each run, for the hub and
the ceilings alike, so the dispatcher's start-up and the last stragglers count for neither.
Afterwards the run's queues (delay tiers and `<ns>.redeliver` included), exchanges and store
are deleted, also on errors and Ctrl-C. Exit status: 0 when every event was accepted and
delivered exactly once (targets are reported, not enforced), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import bare_client, fixed_rate, ingest, payloads, procs, rabbit, results, sink
from bench.ingest import Row, Run

RESULTS_DIR = ingest.RESULTS_DIR
TARGET_RATIO = 0.5
TARGET_P95_MS = 25.0
MAX_IN_FLIGHT = 16
TEN = 10
LOAD_CONCURRENCY = 8  # batch requests in flight while loading the queues
POLL_S = 0.05  # how often the drain watcher asks the sink for its counts
IDLE_TIMEOUT_S = 20.0  # a drain that makes no progress this long has stalled
ROW_ORDER = ("ceiling_1", "hub_1", "ceiling_10", "hub_10", "latency_ceiling", "hub_latency")
ONE_TYPE = "com.bench.one.order.created"
TEN_TYPE = "com.bench.ten.order.created"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=rabbit.DEFAULT_URL, help="RabbitMQ URL (127.0.0.1) or 'sqlite'")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--only", choices=["throughput", "latency", "ceilings"])
    parser.add_argument(
        "--events",
        type=int,
        default=20_000,
        help="events for 1 subscription; 10 subscriptions get a quarter each",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of the fixed-rate run (default 10)"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="webhooks/s of the fixed-rate run")
    parser.add_argument("--workers", type=int, default=1, help="hookhub run --workers (RabbitMQ only)")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=MAX_IN_FLIGHT,
        help="each subscription's max_in_flight (the ceilings follow); the targets assume 16",
    )
    args = parser.parse_args(argv)
    results.check_broker_arg(parser, args.broker)
    if args.events < 40:
        parser.error("--events must be at least 40")
    return args


def amqp(args: argparse.Namespace) -> bool:
    return bool(args.broker != "sqlite")


def wants(args: argparse.Namespace, phase: str) -> bool:
    """Whether this run includes `phase`, counting the ceilings each hub phase is divided by."""
    needs = {
        "throughput_ceilings": {"throughput", "ceilings"},
        "latency_ceiling": {"latency", "ceilings"},
        "throughput": {"throughput"},
        "latency": {"latency"},
    }
    return args.only is None or args.only in needs[phase]


# --- machine context -----------------------------------------------------------------------------


def machine_context(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on, printed first so nobody compares runs from different boxes."""
    return {
        **results.machine_basics(),
        "uvicorn": ingest._version("uvicorn"),
        "aiohttp": ingest._version("aiohttp"),
        "pika": ingest._version("pika"),
        "broker": "RabbitMQ " + rabbit.server_version(args.broker) if amqp(args) else "SQLite (embedded)",
        "store": args.store,
        "events_1": args.events,
        "events_10": args.events // 4,
        "max_in_flight": args.max_in_flight,
        "latency_rate": args.rate,
        "duration_s": args.duration,
    }


def print_context(ctx: dict[str, Any]) -> None:
    print("hookhub fan-out bench")
    print(
        f"  machine : {ctx['cores']} cores ({ctx['usable_cores']} usable), "
        f"load {ctx['load_average_1m_5m'][0]}/{ctx['load_average_1m_5m'][1]} (1m/5m), {ctx['platform']}"
    )
    print(
        f"  software: Python {ctx['python']}, uvicorn {ctx['uvicorn']}, aiohttp {ctx['aiohttp']}, "
        f"pika {ctx['pika']}, {ctx['broker']}"
    )
    print(
        f"  settings: store {ctx['store']}, {ctx['events_1']:,} events x 1 subscription, "
        f"{ctx['events_10']:,} x {TEN}, max_in_flight {ctx['max_in_flight']}, "
        f"{ctx['latency_rate']:g}/s for {ctx['duration_s']:g}s"
    )
    if ctx["load_average_1m_5m"][0] > 0.5 * (ctx["usable_cores"] or 1):
        print("  warning : the machine is already busy; expect noisy numbers")
    print(flush=True)


def preflight(args: argparse.Namespace, ctx: dict[str, Any]) -> list[str]:
    """Services this run needs that are down: better said at once than after a 60 s wait."""
    missing: list[str] = []
    if args.only == "ceilings":
        return missing
    if amqp(args) and "unreachable" in ctx["broker"]:
        missing.append(f"RabbitMQ is not reachable at {args.broker.split('@')[-1]} (or use --broker sqlite)")
    if args.store == "postgres":
        try:
            with socket.create_connection(("127.0.0.1", 5432), timeout=3):
                pass
        except OSError:
            missing.append("PostgreSQL is not reachable at 127.0.0.1:5432 (or use --store sqlite)")
    return missing


# --- CPU accounting ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [0] is field 3 (state) of proc(5), [1] the parent


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process and its live descendants have used so
    far (`hookhub run --workers` serves from child processes); 0 once it is gone."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = _stat(current)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / _TICK
        if current != os.getpid():  # this process's children are the servers, counted apart
            todo.extend(children.get(current, []))
    return total


def service_pids(args: argparse.Namespace) -> dict[str, int]:
    """The broker's and the database's server processes, when they run here: their CPU per event
    is part of the cost too."""
    found: dict[str, int] = {}
    wanted = {"rabbitmq": "beam.smp"} if amqp(args) else {}
    if args.store == "postgres":
        wanted["postgres"] = "postgres"
    for name, command in wanted.items():
        pids = subprocess.run(["pgrep", "-o", "-x", command], capture_output=True, text=True, check=False)
        if pids.stdout.strip():
            found[name] = int(pids.stdout.split()[0])
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies summed over all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


@dataclass
class CpuWindow:
    """CPU used by some processes, and by the whole box, between `start()` and `stop()`."""

    pids: dict[str, int]
    started: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    box0: tuple[float, float] = (0.0, 0.0)
    shares: dict[str, float] = field(default_factory=dict)  # name -> cores used (1.0 = one core)

    def start(self) -> None:
        self.started = time.perf_counter()
        self.cpu0 = {name: process_cpu(pid) for name, pid in self.pids.items()}
        self.box0 = machine_busy()

    def stop(self) -> dict[str, float]:
        span = time.perf_counter() - self.started
        busy, total = machine_busy()
        cores = len(os.sched_getaffinity(0)) or 1
        if span > 0:
            self.shares = {
                name: (process_cpu(pid) - self.cpu0[name]) / span for name, pid in self.pids.items()
            }
        if total > self.box0[1]:
            self.shares["box"] = (busy - self.box0[0]) / (total - self.box0[1]) * (os.cpu_count() or cores)
        return self.shares


def describe_cpu(shares: dict[str, float]) -> str:
    parts = [f"{name} {share:.0%}" for name, share in shares.items() if name != "box"]
    if "box" in shares:
        parts.append(f"box {shares['box']:.1f}/{os.cpu_count()} cores")
    return "CPU " + ", ".join(parts) if parts else ""


# --- watching the sink ---------------------------------------------------------------------------


@dataclass
class Drain:
    """How a wait for the sink to receive `expected` distinct ids per path ended."""

    complete: bool
    received: dict[str, int]
    seconds: float  # from the first delivery the watcher saw to the last
    cpu: dict[str, float]


def watch(
    sink_url: str,
    expected: dict[str, int],
    pids: dict[str, int],
    cap_s: float,
    idle_s: float = IDLE_TIMEOUT_S,
    still_sending: Callable[[], bool] = lambda: False,
) -> Drain:
    """Poll the sink until every path has its ids, the deliveries stall, or `cap_s` passes; the
    CPU window runs from the first delivery seen to the last, so a dispatcher's poll delay before
    it starts does not dilute the shares."""
    window = CpuWindow(pids)
    began = time.perf_counter()
    first = 0.0
    last_total, last_change = -1, began
    received: dict[str, int] = {}
    while True:
        paths = sink.stats(sink_url)
        received = {p: paths.get(p, {}).get("distinct", 0) for p in expected}
        total = sum(received.values())
        now = time.perf_counter()
        if total and not first:
            first = now
            window.start()
        if all(received[p] >= n for p, n in expected.items()):
            return Drain(True, received, now - first, window.stop())
        if total != last_total or still_sending():
            last_total, last_change = total, now
        if now - last_change > idle_s or now - began > cap_s:
            return Drain(False, received, now - first if first else 0.0, window.stop() if first else {})
        time.sleep(POLL_S)


@dataclass(frozen=True, slots=True)
class Spread:
    """Receive times of one run, reduced to rates."""

    deliveries: int
    steady_rate: float  # over the middle 80% of the receive times
    full_rate: float  # first to last receive
    span_s: float


def spread(times: Iterable[float]) -> Spread:
    ordered = sorted(times)
    n = len(ordered)
    if n < 10:
        return Spread(n, 0.0, 0.0, 0.0)
    lo, hi = n // 10, n - 1 - n // 10
    middle = ordered[hi] - ordered[lo]
    span = ordered[-1] - ordered[0]
    return Spread(
        deliveries=n,
        steady_rate=(hi - lo) / middle if middle > 0 else 0.0,
        full_rate=(n - 1) / span if span > 0 else 0.0,
        span_s=span,
    )


@dataclass
class Received:
    """What the sink logged under some paths, checked against the ids that were sent."""

    times: list[float]
    missing: dict[str, int]
    unexpected: dict[str, int]
    duplicates: dict[str, int]

    def trouble(self) -> str:
        """Empty when every path got exactly its ids once; else the counts that are off, by path."""
        parts = [
            f"{what} { ({p: n for p, n in counts.items() if n}) }"
            for what, counts in (
                ("missing", self.missing),
                ("unexpected ids", self.unexpected),
                ("duplicates", self.duplicates),
            )
            if any(counts.values())
        ]
        return "; ".join(parts)


def collect(sink_url: str, paths: dict[str, set[str]]) -> Received:
    """Each path must have received exactly the ids in `paths[path]`, each once."""
    stats = sink.stats(sink_url)
    got: dict[str, dict[str, float]] = {}
    for prefix in {path.rsplit("/", 1)[0] + "/" for path in paths}:
        got.update(sink.dump(sink_url, prefix))
    times: list[float] = []
    missing, unexpected, duplicates = {}, {}, {}
    for path, want in paths.items():
        seen = got.get(path, {})
        times.extend(t for i, t in seen.items() if i in want)
        missing[path] = len(want - seen.keys())
        unexpected[path] = len(seen.keys() - want)
        duplicates[path] = stats.get(path, {}).get("count", 0) - len(seen)
    return Received(times, missing, unexpected, duplicates)


# --- ceilings ------------------------------------------------------------------------------------


def run_client_ceiling(run: Run, snk: procs.Server, key: str, requests: int, concurrency: int) -> None:
    """The bare client in its own process against the sink; the rate from the sink's log."""
    assert snk.proc is not None
    path = f"/ceiling/c{concurrency}"
    argv = [
        sys.executable,
        "-m",
        "bench.bare_client",
        snk.base_url + path,
        f"--requests={requests}",
        f"--concurrency={concurrency}",
        "--json",
    ]
    print(f"ceiling {key}: bare aiohttp client, {requests:,} POSTs, {concurrency} in flight ...", flush=True)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        client = subprocess.Popen(argv, cwd=procs.ROOT, stdout=out, stderr=err)
        try:
            drain = watch(
                snk.base_url,
                {path: requests},
                {"client": client.pid, "sink": snk.proc.pid},
                cap_s=120,
                still_sending=lambda: client.poll() is None,
            )
            client.wait(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        errors = err.read().decode(errors="replace")
    if client.returncode != 0 or not lines:
        raise RuntimeError(f"bare client failed (exit {client.returncode}):\n{errors[-2000:]}")
    result = bare_client.ClientResult(**json.loads(lines[-1]))
    if result.errors:
        run.problem(
            f"ceiling {key}: {result.errors} of {requests} not answered 2xx; first: {result.first_error}"
        )
    got = collect(snk.base_url, {path: {f"{result.run_id}-{i}" for i in range(requests)}})
    if got.trouble():
        run.problem(f"ceiling {key}: the sink's log does not match what was sent: {got.trouble()}")
    rates = spread(got.times)
    run.data[key] = {"client": asdict(result), "client_rate": result.rate, **asdict(rates), "cpu": drain.cpu}
    label = "C1 " if key == "ceiling_1" else "C10"
    run.rows.append(
        Row(
            key=key,
            phase=f"{label} bare aiohttp client, {concurrency} in flight",
            rate=rates.steady_rate,
            unit="deliv/s",
            note=describe_cpu(drain.cpu),
        )
    )


@dataclass
class Latency:
    """One fixed-rate run measured end to end: client send schedule against the sink's log."""

    client: fixed_rate.FixedRateResult
    ms: list[float]  # sink receive time - due time, in send order (missing ids left out)
    delivered_rate: float  # at the sink, first to last receipt
    cpu: dict[str, float]

    @property
    def sorted_ms(self) -> list[float]:
        return sorted(self.ms)

    def summary(self) -> dict[str, float]:
        lat = self.sorted_ms
        pct = fixed_rate.percentile
        return {
            "n": len(lat),
            "p50": pct(lat, 50),
            "p95": pct(lat, 95),
            "p99": pct(lat, 99),
            "max": lat[-1] if lat else 0.0,
            "p50_first_s": self.second_p50(first=True),
            "p50_last_s": self.second_p50(first=False),
        }

    def second_p50(self, first: bool) -> float:
        """Median of the first or the last second's requests: a rising one means a growing backlog."""
        per_s = max(1, int(self.client.target_rate))
        part = sorted(self.ms[:per_s] if first else self.ms[-per_s:])
        return fixed_rate.percentile(part, 50)

    def trend(self) -> str:
        return f"p50 {self.second_p50(True):,.0f} ms in 1st s, {self.second_p50(False):,.0f} in last"


def run_latency(
    run: Run, base_url: str, path: str, sink_path: str, expect: int, snk: procs.Server, pids: dict[str, int]
) -> Latency:
    """The fixed-rate client into `base_url + path`, then wait until the sink has every event.

    A 1 s warm-up at a fifth of the rate goes first, so connection pools (client, hub, store)
    are open and the measured run starts from a steady state, not from a cold process.
    """
    args = run.args
    warm = fixed_rate.run_fixed_rate(base_url, path, rate=args.rate / 5, duration=1.0, expect=expect)
    watch(snk.base_url, {sink_path: warm.accepted}, {}, cap_s=30, idle_s=10)
    before = sink.stats(snk.base_url).get(sink_path, {}).get("distinct", 0)
    window = CpuWindow(pids)
    window.start()
    result = fixed_rate.run_fixed_rate(base_url, path, rate=args.rate, duration=args.duration, expect=expect)
    cpu = window.stop()
    watch(snk.base_url, {sink_path: before + result.accepted}, {}, cap_s=90, idle_s=10)
    got = sink.dump(snk.base_url, sink_path.rsplit("/", 1)[0] + "/").get(sink_path, {})
    period = 1.0 / result.target_rate
    ms, times = [], []
    for i in range(result.scheduled):
        t = got.get(f"{result.run_id}-{i}")
        if t is not None:
            times.append(t)
            ms.append((t - (result.started + i * period)) * 1000.0)
    return Latency(result, ms, spread(times).full_rate, cpu)


def latency_row(key: str, phase: str, lat: Latency, note: str) -> Row:
    summary = lat.summary()
    return Row(
        key=key,
        phase=phase,
        rate=lat.delivered_rate,
        unit="deliv/s",
        p50_ms=summary["p50"],
        p95_ms=summary["p95"],
        p99_ms=summary["p99"],
        note=note,
    )


def run_ceilings(run: Run, snk: procs.Server) -> None:
    args = run.args
    assert snk.proc is not None
    if wants(args, "throughput_ceilings"):
        run_client_ceiling(run, snk, "ceiling_1", args.events, args.max_in_flight)
        run_client_ceiling(run, snk, "ceiling_10", (args.events // 4) * TEN, args.max_in_flight * TEN)
    if wants(args, "latency_ceiling"):
        print(f"latency ceiling: {args.rate:g} webhooks/s open-loop straight to the sink ...", flush=True)
        pids = {"client": os.getpid(), "sink": snk.proc.pid}
        lat = run_latency(run, snk.base_url, "/direct/lat", "/direct/lat", 200, snk, pids)
        result = lat.client
        if result.errors or len(lat.ms) != result.scheduled:
            run.problem(
                f"latency ceiling: {result.errors} requests failed ({result.first_error}), "
                f"{result.scheduled - len(lat.ms)} not in the sink's log"
            )
        run.data["latency_ceiling"] = asdict(result) | {"cpu": lat.cpu, "end_to_end_ms": lat.summary()}
        note = f"client lag max {result.max_send_lag_ms:.0f} ms; {describe_cpu(lat.cpu)}"
        run.rows.append(
            latency_row("latency_ceiling", f"L  client -> sink at {args.rate:g}/s open-loop", lat, note)
        )


# --- the hub -------------------------------------------------------------------------------------


def subscription(sink_url: str, path: str, pattern: str, max_in_flight: int) -> dict[str, Any]:
    """A push subscription to the sink: signed (the bare client signs too), no rate limit."""
    return {
        "url": sink_url + path,
        "types": [pattern],
        "secret": bare_client.SIGNING_SECRET,
        "max_in_flight": max_in_flight,
        "timeout": "10s",
    }


def throughput_subscriptions() -> dict[str, str]:
    """Subscription name -> the event type prefix it takes (one, or all ten, per type)."""
    return {"one": "com.bench.one.#"} | {f"ten{i:02d}": "com.bench.ten.#" for i in range(TEN)}


def hub_config(
    args: argparse.Namespace, store: str, namespace: str, tmp: Path, sink_url: str
) -> dict[str, Any]:
    """One GitHub provider (latency), one producer (loading), and the subscriptions the run needs."""
    subs: dict[str, Any] = {}
    if wants(args, "latency"):
        subs["lat"] = subscription(sink_url, "/hub/lat", "com.github.#", args.max_in_flight)
    if wants(args, "throughput"):
        for name, pattern in throughput_subscriptions().items():
            subs[name] = subscription(sink_url, f"/hub/{name}", pattern, args.max_in_flight)
    broker = f"sqlite:///{tmp}/broker.db" if args.broker == "sqlite" else args.broker
    return payloads.hub_config(broker, store, namespace, tmp, subs)


def hub_server(config: Path, tmp: Path, workers: int = 1) -> procs.Server:
    port = procs.free_port()
    argv = [
        str(procs.VENV_BIN / "hookhub"),
        "run",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *([f"--workers={workers}"] if workers > 1 else []),
    ]
    name = "hub (hookhub run)" if workers == 1 else f"hub (hookhub run --workers {workers})"
    return procs.Server(name, argv, port, tmp / "hub.log", cwd=tmp)


def batch_bodies(prefix: str, event_type: str, count: int) -> Iterator[bytes]:
    """Producer batches of 100 structured CloudEvents with ids `<prefix>-<i>`."""
    data = json.loads(payloads.event_data())
    for start in range(0, count, payloads.BATCH_SIZE):
        events = [
            {
                "specversion": "1.0",
                "id": f"{prefix}-{i}",
                "source": payloads.EVENT_SOURCE,
                "type": event_type,
                "datacontenttype": "application/json",
                "data": data,
            }
            for i in range(start, min(count, start + payloads.BATCH_SIZE))
        ]
        yield json.dumps(events, separators=(",", ":")).encode()


@dataclass
class Load:
    accepted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    seconds: float = 0.0


async def _load(base_url: str, bodies: list[bytes]) -> Load:
    load = Load()
    headers = {
        "Content-Type": "application/cloudevents-batch+json",
        "Authorization": f"Bearer {payloads.PRODUCER_TOKEN}",
    }
    queue = list(reversed(bodies))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def poster() -> None:
            while queue:
                body = queue.pop()
                try:
                    async with session.post(base_url + "/events", data=body, headers=headers) as resp:
                        text = await resp.text()
                        load.statuses[str(resp.status)] = load.statuses.get(str(resp.status), 0) + 1
                        if resp.status == 202:
                            load.accepted += len(json.loads(text)["ids"])
                        elif not load.first_error:
                            load.first_error = f"HTTP {resp.status}: {text[:200]}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    load.first_error = load.first_error or f"{type(exc).__name__}: {exc}"

        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(LOAD_CONCURRENCY)))
        load.seconds = time.perf_counter() - started
    return load


def load_events(base_url: str, prefix: str, event_type: str, count: int) -> Load:
    """POST `count` events through the producer API as fast as LOAD_CONCURRENCY batches allow."""
    return asyncio.run(_load(base_url, list(batch_bodies(prefix, event_type, count))))


def hub_metrics(base_url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample on the hub's /metrics as (name, labels, value)."""
    import urllib.request

    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = []
    for line in text.splitlines():
        if not line.startswith("hookhub_") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels, value = rest.rsplit("} ", 1)
        pairs = (item.split("=", 1) for item in labels.split(",") if "=" in item)
        samples.append((name, {k: v.strip('"') for k, v in pairs}, float(value)))
    return samples


def delivery_metrics(base_url: str, subs: list[str]) -> dict[str, Any]:
    """Outcomes per subscription, and the mean time of the POST itself (the hub's own histogram):
    what is left of a delivery's time in its slot is the hub's, not the subscriber's."""
    outcomes: dict[str, dict[str, float]] = {s: {} for s in subs}
    post_sum = post_count = 0.0
    for name, labels, value in hub_metrics(base_url):
        sub = labels.get("subscription")
        if sub not in outcomes:
            continue
        if name == "hookhub_deliveries_total":
            outcomes[sub][labels["verdict"]] = value
        elif name == "hookhub_delivery_duration_seconds_sum":
            post_sum += value
        elif name == "hookhub_delivery_duration_seconds_count":
            post_count += value
    return {"outcomes": outcomes, "post_mean_ms": post_sum / post_count * 1000 if post_count else None}


def judge_ratio(row: Row, rate: float, ceiling: dict[str, Any] | None, label: str) -> None:
    if ceiling and ceiling.get("steady_rate"):
        ratio = rate / ceiling["steady_rate"]
        ingest.judge(row, f"{ratio:.2f} of {label}", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)


def hub_throughput(
    run: Run, hub: procs.Server, snk: procs.Server, store: str, namespace: str, key: str, subs: list[str]
) -> None:
    """Load the paused subscriptions' queues, resume them, time the drain at the sink."""
    args = run.args
    assert hub.proc is not None and snk.proc is not None
    count = args.events if len(subs) == 1 else args.events // 4
    event_type = ONE_TYPE if len(subs) == 1 else TEN_TYPE
    prefix = f"{key}-{uuid.uuid4().hex[:8]}"
    print(f"hub {len(subs)} subscription(s): loading {count:,} events through POST /events ...", flush=True)
    load = load_events(hub.base_url, prefix, event_type, count)
    if load.accepted != count:
        run.problem(
            f"{key}: {count - load.accepted} of {count} events not accepted "
            f"({load.statuses}; {load.first_error})"
        )
    depths: dict[str, int | None] = {}
    if amqp(args):
        depths = rabbit.queue_depths(args.broker, [f"{namespace}.sub.{s}" for s in subs])
        short = {q: d for q, d in depths.items() if d != load.accepted}
        if short:
            run.problem(f"{key}: queues should hold {load.accepted:,} each before the resume: {short}")
    total = load.accepted * len(subs)
    print(
        f"  loaded {load.accepted:,} events ({load.accepted / load.seconds:,.0f}/s); resuming, "
        f"draining {total:,} deliveries ...",
        flush=True,
    )
    ingest.set_subscription_states(store, subs, paused=False, reason="bench.fanout")
    drain = watch(
        snk.base_url,
        {f"/hub/{s}": load.accepted for s in subs},
        {"hub": hub.proc.pid, "sink": snk.proc.pid},
        cap_s=180,
    )
    ids = {f"{prefix}-{i}" for i in range(count)}
    got = collect(snk.base_url, {f"/hub/{s}": ids for s in subs})
    if not drain.complete or got.trouble():
        run.problem(
            f"{key}: every event must reach every subscription exactly once: {got.trouble()} "
            f"(received {drain.received}, drain {'complete' if drain.complete else 'stalled'})"
        )
    metrics = delivery_metrics(hub.base_url, subs)
    not_delivered = {
        s: {o: n for o, n in v.items() if o != "delivered" and n} for s, v in metrics["outcomes"].items()
    }
    if any(not_delivered.values()):
        run.problem(f"{key}: deliveries that were not 'delivered' at the first attempt: {not_delivered}")
    rates = spread(got.times)
    run.data[key] = {
        "events": count,
        "subscriptions": len(subs),
        "load": asdict(load),
        "queue_depths_before_resume": depths,
        **asdict(rates),
        "drain_complete": drain.complete,
        "cpu": drain.cpu,
        **metrics,
    }
    label, ceiling_key = ("C1", "ceiling_1") if len(subs) == 1 else ("C10", "ceiling_10")
    plural = "s" if len(subs) > 1 else ""
    row = Row(
        key=key,
        phase=f"    hub, {len(subs)} subscription{plural} x {args.max_in_flight} in flight",
        rate=rates.steady_rate,
        unit="deliv/s",
        note=describe_cpu(drain.cpu),
    )
    judge_ratio(row, rates.steady_rate, run.data.get(ceiling_key), label)
    run.rows.append(row)
    run.footer.append(
        limit_hint(run, key, len(subs), rates.steady_rate, drain.cpu.get("hub", 0.0), metrics["post_mean_ms"])
    )
    print(f"  {rates.steady_rate:,.0f} deliveries/s ({describe_cpu(drain.cpu)})", flush=True)


def limit_hint(run: Run, key: str, subs: int, rate: float, hub_cpu: float, post_ms: float | None) -> str:
    """Which limit the hub hit: a whole core (one process, one GIL), or Little's law, where
    max_in_flight slots / deliveries per second = how long each delivery holds its slot."""
    in_flight = run.args.max_in_flight * subs
    line = f"{key}: hub CPU {hub_cpu:.0%} of one core"
    if rate > 0:
        line += f"; {in_flight} slots / {rate:,.0f}/s = {in_flight / rate * 1000:.1f} ms per delivery"
    ceiling = run.data.get("ceiling_1" if subs == 1 else "ceiling_10", {}).get("steady_rate")
    if ceiling:
        line += f" (bare client {in_flight / ceiling * 1000:.1f} ms)"
    if post_ms is not None:
        line += f", of which the POST {post_ms:.1f} ms"
    if hub_cpu >= 0.9:
        return line + " -> CPU-bound in its one process"
    return line + f" -> {1 - hub_cpu:.0%} of a core idle: slots also wait on I/O (store, broker)"


def hub_latency(run: Run, hub: procs.Server, snk: procs.Server) -> None:
    args = run.args
    assert hub.proc is not None and snk.proc is not None
    print(f"hub latency: {args.rate:g} webhooks/s open-loop, webhook -> hub -> sink ...", flush=True)
    pids = {"hub": hub.proc.pid, "sink": snk.proc.pid, "client": os.getpid(), **service_pids(args)}
    lat = run_latency(run, hub.base_url, "/webhooks/github", "/hub/lat", 202, snk, pids)
    result = lat.client
    if result.errors:
        run.problem(
            f"hub latency: {result.errors} of {result.scheduled} not answered 202 ({result.first_error})"
        )
    if len(lat.ms) != result.accepted:
        run.problem(f"hub latency: {result.accepted - len(lat.ms)} accepted webhooks never reached the sink")
    run.data["hub_latency"] = asdict(result) | {
        "cpu": lat.cpu,
        "end_to_end_ms": lat.summary(),
        "delivered_rate": lat.delivered_rate,
    }
    note = f"ingest p95 {result.p95_ms:.0f} ms; {lat.trend()}; {describe_cpu(lat.cpu)}"
    row = latency_row("hub_latency", f"    webhook -> hub -> sink at {args.rate:g}/s", lat, note)
    ceiling_p95 = run.data.get("latency_ceiling", {}).get("end_to_end_ms", {}).get("p95")
    ratio = f"p95 {row.p95_ms / ceiling_p95:,.0f}x L" if ceiling_p95 and row.p95_ms is not None else ""
    ok = bool(lat.ms) and (row.p95_ms or 0) < TARGET_P95_MS
    ingest.judge(row, ratio, f"p95 < {TARGET_P95_MS:g} ms", ok)
    run.rows.append(row)
    print(f"  end-to-end p95 {row.p95_ms:,.1f} ms ({lat.trend()})", flush=True)


def run_hub(run: Run, snk: procs.Server, tmp: Path, stamp: str) -> None:
    """Start `hookhub run` on a fresh namespace and store, run the hub phases, clean up."""
    args = run.args
    namespace = f"benchfan{uuid.uuid4().hex[:8]}"
    run.data["namespace"] = namespace
    tp_subs = list(throughput_subscriptions())
    with ingest.store_url(args.store, tmp) as store:
        config = tmp / "hookhub.yaml"
        config.write_text(
            yaml.safe_dump(hub_config(args, store, namespace, tmp, snk.base_url), sort_keys=False)
        )
        if wants(args, "throughput"):
            ingest.set_subscription_states(store, tp_subs, paused=True, reason="bench.fanout")
        hub = hub_server(config, tmp, args.workers)
        try:
            print(
                f"starting {hub.name} (namespace {namespace}, store {store.split('@')[-1]}) ...", flush=True
            )
            hub.start(procs.clean_env())
            hub.wait_ready("/readyz", timeout=60)
            if wants(args, "latency"):  # first, on empty queues
                hub_latency(run, hub, snk)
            if wants(args, "throughput"):
                hub_throughput(run, hub, snk, store, namespace, "hub_1", tp_subs[:1])
                hub_throughput(run, hub, snk, store, namespace, "hub_10", tp_subs[1:])
        finally:
            hub.stop()
            if hub.log_path.exists():
                RESULTS_DIR.mkdir(exist_ok=True)
                shutil.copy(hub.log_path, RESULTS_DIR / f"fanout-{stamp}-hub.log")
            if amqp(args):
                ingest.guarded(run, f"deleting namespace {namespace}", lambda: cleanup(run, namespace))


def cleanup(run: Run, namespace: str) -> None:
    """Delete every queue and exchange of the run, then check with rabbitmqctl that none is left
    (and try again if one is: a queue left behind keeps costing the broker file handles)."""
    names = ["lat", *throughput_subscriptions()]
    for attempt in range(3):
        run.data["deleted"] = rabbit.delete_namespace(run.args.broker, namespace, names)
        queues, exchanges = rabbit.extra_names(namespace)
        if not queues and not exchanges:
            return
        time.sleep(1.0 + attempt)
    run.problem(f"left on the broker after cleanup: {queues + exchanges}")


# --- output --------------------------------------------------------------------------------------


def write_summary(run: Run, stamp: str) -> Path:
    targets = {"throughput_vs_ceiling": TARGET_RATIO, "p95_ms": TARGET_P95_MS}
    return ingest.write_summary(run, stamp, "fanout", targets)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, ingest._terminate)
    run = Run(args)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    ctx = machine_context(args)
    run.data["machine"] = ctx
    print_context(ctx)
    missing = preflight(args, ctx)
    if missing:
        print("cannot run:", *missing, sep="\n  - ", file=sys.stderr)
        return 2
    started = time.monotonic()
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="hookhub-bench-") as tmp_name:
            tmp = Path(tmp_name)
            snk = sink.sink_server(tmp)
            with procs.running(snk, procs.clean_env(), "/readyz", timeout=30):
                try:
                    run_ceilings(run, snk)
                except Exception as exc:  # report it, and still measure the hub
                    run.problem(f"ceilings: {ingest.describe(exc)}")
                if args.only != "ceilings":
                    try:
                        run_hub(run, snk, tmp, stamp)
                    except Exception as exc:  # cleanup already ran in run_hub's finally
                        run.problem(f"hub: {ingest.describe(exc)}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        ingest.report(run, started, interrupted, lambda: write_summary(run, stamp), ROW_ORDER)
    return ingest.exit_code(run, interrupted)


if __name__ == "__main__":
    raise SystemExit(main())
