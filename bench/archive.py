"""Archive benchmark (issue #7): hub ingest throughput with the archiver running vs not, same run.

    .venv/bin/python -m bench.archive [--duration 10] [--broker sqlite|amqp://...] [--rounds 1]

Two hubs, identical but for one thing, each `hookhub run`'s app on uvicorn with its flags, a fresh
namespace and its own SQLite store and file archive: "on" runs the archiver as `hookhub run` does;
"off" has its archiver replaced by one that never consumes (the hub has no switch for it: that
would be a config flag used by nothing but this bench). Both still bind and fill the archive
queue, so the broker does the same work; what differs is the archiver's consumption, encoding,
compression and fsyncs competing with ingest for the process and the disk.

Each round loads "off" then "on" with wrk: single GitHub webhooks (`-c --connections`) and
batches of 100 CloudEvents on POST /events. Printed: events/s each, and on / off. After the "on"
hub has taken its archive queue's backlog (printed: backlog, drain time, archiver rate) and stopped,
its archive must hold every event it answered 202 for.
Exit status: 0 when every request was accepted and the archive is complete, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench import ceilings, payloads, procs, rabbit, results, wrk
from bench.ingest import batch_env

PHASES = ("single", "batch")


def hub_config(broker: str, namespace: str, tmp: Path) -> dict[str, Any]:
    """No subscriptions: every event goes to the archive queue (bound to `#`) and nowhere else."""
    return payloads.hub_config(broker, f"sqlite:///{tmp}/store.db", namespace, tmp)


class IdleArchiver:
    """The "off" hub's archiver: started and stopped, never consuming."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def serve(config_path: str, port: int, archiver: str) -> None:
    """One hub in this process, as `hookhub run` serves it (the bench's subprocess entry)."""
    import uvicorn

    from hookhub import hub as hub_module
    from hookhub import logs
    from hookhub.config import load_config
    from hookhub.serving import uvicorn_options
    from hookhub.web import create_app

    if archiver == "off":
        hub_module.Archiver = IdleArchiver  # type: ignore[misc,assignment]
    logs.configure("warning", "text")
    app = create_app(load_config(Path(config_path)))
    options: dict[str, Any] = {
        "loop": "uvloop",
        "access_log": False,
        "log_level": "warning",
        "lifespan": "on",
    }
    uvicorn.run(app, host="127.0.0.1", port=port, **options, **uvicorn_options())


def hub_server(variant: str, config: Path, tmp: Path) -> procs.Server:
    port = procs.free_port()
    argv = [sys.executable, "-m", "bench.archive", "serve", str(config), str(port), variant]
    return procs.Server(f"hub, archiver {variant}", argv, port, tmp / f"hub-{variant}.log")


async def _count(root: Path) -> int:
    from hookhub.archive import open_archive

    archive = open_archive(f"file://{root}")
    try:
        async with contextlib.aclosing(archive.scan(0, 4e9)) as rows:
            return sum([1 async for _ in rows])
    finally:
        await archive.close()


def archived_events(root: Path) -> int:
    return asyncio.run(_count(root))


def delete_namespace(url: str, namespace: str) -> None:
    """The run's queues and exchanges on RabbitMQ (SQLite brokers vanish with the temp dir)."""
    if not url.startswith("amqp"):
        return
    rabbit.delete_namespace(url, namespace, subscriptions=())
    conn = rabbit.connect(url)
    try:
        for suffix in ("archive", "dead", "topology"):
            channel = conn.channel()
            channel.queue_delete(f"{namespace}.{suffix}")
            channel.close()
    finally:
        conn.close()


def archive_depth(hub: procs.Server, namespace: str) -> int:
    """Events waiting in the archive queue (not counting the archiver's unsettled batch)."""
    with urllib.request.urlopen(hub.base_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(rf'^hookhub_queue_depth{{queue="{re.escape(namespace)}\.archive"}} (\S+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


def drain(hub: procs.Server, namespace: str, timeout: float = 300.0) -> tuple[int, float]:
    """Wait until the archiver took the whole backlog; (backlog at the start, seconds it took)."""
    backlog = archive_depth(hub, namespace)
    started = time.monotonic()
    while archive_depth(hub, namespace) > 0:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the archive queue did not drain in {timeout:.0f}s")
        time.sleep(0.2)
    return backlog, time.monotonic() - started


def load_hub(
    hub: procs.Server, settings: wrk.WrkSettings, batch_connections: int
) -> tuple[dict[str, float], int, list[str]]:
    """events/s per phase, events answered 202, problems."""
    rates: dict[str, float] = {}
    accepted = 0
    problems: list[str] = []
    runs: dict[str, tuple[str, str, Callable[[], dict[str, str]], int, int]] = {
        "single": ("webhook.lua", "/webhooks/github", ceilings.webhook_env, 1, settings.connections),
        "batch": ("batch.lua", "/events", batch_env, payloads.BATCH_SIZE, batch_connections),
    }
    for phase, (script, path, env, per, connections) in runs.items():
        warm = wrk.WrkSettings(settings.threads, connections, 1, settings.timeout)
        cfg = wrk.WrkSettings(settings.threads, connections, settings.duration, settings.timeout)
        for c in (warm, cfg):
            result = wrk.run_wrk(hub.base_url + path, script, c, env())
            accepted += result.n202 * per
            if result.errors:
                problems.append(f"{hub.name} {phase}: {result.errors} not 202: {result.describe_errors()}")
        rates[phase] = result.accepted_rate * per
    return rates, accepted, problems


def run_variant(variant: str, args: argparse.Namespace, tmp: Path) -> tuple[dict[str, float], list[str]]:
    namespace = f"bencharc{uuid.uuid4().hex[:8]}"
    broker = args.broker if args.broker != "sqlite" else f"sqlite:///{tmp}/broker.db"
    config = tmp / "hookhub.yaml"
    config.write_text(yaml.safe_dump(hub_config(broker, namespace, tmp), sort_keys=False))
    hub = hub_server(variant, config, tmp)
    settings = wrk.WrkSettings(threads=1, connections=args.connections, duration=args.duration)
    print(f"hub with archiver {variant} (namespace {namespace}) ...", flush=True)
    try:
        with procs.running(hub, procs.clean_env(), "/readyz", timeout=60):
            rates, accepted, problems = load_hub(hub, settings, args.batch_connections)
            if variant == "on":
                backlog, seconds = drain(hub, namespace)
                rate = f", {backlog / seconds:.0f} ev/s" if seconds > 0.5 else ""
                print(f"  archive queue backlog after the load: {backlog}, drained in {seconds:.1f}s{rate}")
        if variant == "on":  # stopped: the archiver has flushed everything it took
            stored = archived_events(tmp / "archive")
            if stored < accepted:
                problems.append(f"archive holds {stored} events, {accepted} were accepted")
            print(f"  archive: {stored} events for {accepted} accepted", flush=True)
    finally:
        delete_namespace(broker, namespace)
    return rates, problems


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        serve(argv[1], int(argv[2]), argv[3])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run (default 10)")
    parser.add_argument("--broker", default="sqlite", help="'sqlite' or an amqp:// URL (127.0.0.1)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections, single webhooks")
    parser.add_argument("--batch-connections", type=int, default=16, help="wrk connections, batches")
    parser.add_argument("--rounds", type=int, default=1, help="off/on pairs to run (default 1)")
    args = parser.parse_args(argv)
    results.check_broker_arg(parser, args.broker)
    wrk.ensure_wrk()
    totals: dict[str, dict[str, list[float]]] = {v: {p: [] for p in PHASES} for v in ("off", "on")}
    problems: list[str] = []
    try:
        for _ in range(args.rounds):
            for variant in ("off", "on"):
                with tempfile.TemporaryDirectory(prefix="hookhub-bench-archive-") as tmp:
                    rates, found = run_variant(variant, args, Path(tmp))
                problems += found
                for phase in PHASES:
                    totals[variant][phase].append(rates[phase])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    broker = "SQLite" if args.broker == "sqlite" else "RabbitMQ"
    print(f"\ningest with the archiver on vs off ({broker} broker, SQLite store, file archive)")
    print(f"{'phase':<8} {'off ev/s':>10} {'on ev/s':>10} {'on / off':>9}")
    for phase in PHASES:
        off = sum(totals["off"][phase]) / args.rounds
        on = sum(totals["on"][phase]) / args.rounds
        print(f"{phase:<8} {off:>10.0f} {on:>10.0f} {on / off if off else 0:>9.2f}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
