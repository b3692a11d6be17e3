"""Backlog benchmark (issue #9): events waiting for a subscriber that is down must not slow ingest,
and the subscriber's recovery must drain them at the fan-out rate.

    .venv/bin/python -m bench.backlog [--broker amqp://...|sqlite] [--store postgres|sqlite]
                                      [--backlog 1000000] [--duration 8] [--drain-seconds 30]

One `hookhub run` hub on a fresh namespace and store, with one push subscription, `down`, bound to
every event type; its subscriber is bench.sink. `down` is paused in the store before the hub
starts, so its queue keeps what it receives: the backlog is held by a paused subscription, as it
would be for a subscriber that is down. Steps, all aimed at 127.0.0.1:
  fan-out   F: --events events loaded into `down`'s queue, then `down` resumed: deliveries/s of
            an empty-started queue (bench.fanout's method, exactly once checked); paused again.
  empty     ingest on the (nearly) empty queue: signed single webhooks under wrk (64 connections,
            bench.ingest's single phase), then --rate webhooks/s open-loop (bench.fixed_rate).
  load      --backlog events through POST /events, batches of 100; the queue's depth is checked.
  backlog   the same ingest runs with the backlog waiting: ratios to `empty`, target within 10%.
  recovery  `down` resumed with its subscriber up: deliveries/s over --drain-seconds against F
            (target within 10%); the rest is deleted with the namespace, not delivered.
The archive queue (`<ns>.archive`) receives every event too and the hub's archiver consumes it,
as in normal operation; each ingest step waits until it is drained first, so the archiver's
catch-up after the load is not counted against the backlog. The store's dedup claims grow by one
row per event as well: part of what a backlog of ingested events costs.
Afterwards the run's queues, exchanges, store and files are deleted, also on errors and Ctrl-C.
Exit status: 0 when every event was accepted and the queue held it (targets are reported, not
enforced: a shared 2-core box is too noisy to gate on), 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench import ceilings, fanout, fixed_rate, ingest, payloads, procs, rabbit, results, sink, wrk
from bench.backlog_hub import (
    SINK_PATH,
    STATE_POLL_S,
    SUB,
    check_held,
    cleanup,
    hub_config,
    set_down,
    wait_archive,
)
from bench.results import RESULTS_DIR, Row, Run, describe, guarded, judge

BACKLOG_TYPE = "com.bench.backlog.order.created"
TARGET_RATE = 0.9  # backlog / empty, and recovery drain / fan-out F
TARGET_LATENCY = 1.1  # backlog / empty, p95 and p99
TARGETS = {"ingest_vs_empty_min": TARGET_RATE, "latency_vs_empty_max": TARGET_LATENCY, "drain_vs_F_min": 0.9}
LOAD_CHUNK = 50_000  # events per load_events call: its batch bodies are built in memory
ROW_ORDER = ("empty_single", "backlog_single", "empty_latency", "backlog_latency", "load", "fanout", "drain")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=rabbit.DEFAULT_URL, help="RabbitMQ URL (127.0.0.1) or 'sqlite'")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="events left waiting (default 1M)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per ingest run (default 8)")
    parser.add_argument("--rate", type=float, default=500.0, help="webhooks/s of the open-loop run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--events", type=int, default=20_000, help="events of the fan-out reference F")
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="recovery window (default 30)")
    parser.add_argument("--max-in-flight", type=int, default=fanout.MAX_IN_FLIGHT, help="of `down`")
    parser.add_argument(
        "--archive-wait", type=float, default=300.0, help="at most this long for the archiver to catch up"
    )
    parser.set_defaults(only=None)  # bench.fanout's helpers read it
    args = parser.parse_args(argv)
    results.check_broker_arg(parser, args.broker)
    if args.events < 40 or args.backlog < 1:
        parser.error("--events must be at least 40 and --backlog at least 1")
    return args


def machine_context(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on, printed first so nobody compares runs from different boxes."""
    return {
        **results.machine_basics(),
        "broker": "RabbitMQ " + rabbit.server_version(args.broker)
        if fanout.amqp(args)
        else "SQLite (embedded)",
        "store": args.store,
        "backlog": args.backlog,
        "duration_s": args.duration,
    }


def print_context(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    print("hookhub backlog bench")
    print(
        f"  machine : {ctx['cores']} cores ({ctx['usable_cores']} usable), "
        f"load {ctx['load_average_1m_5m'][0]}/{ctx['load_average_1m_5m'][1]} (1m/5m), {ctx['platform']}"
    )
    print(f"  software: Python {ctx['python']}, {ctx['broker']}, store {ctx['store']}")
    print(
        f"  settings: backlog {args.backlog:,} events, {args.duration:g}s per ingest run "
        f"(wrk -c{args.connections}, {args.rate:g}/s open-loop), F {args.events:,} events, "
        f"recovery window {args.drain_seconds:g}s"
    )
    if ctx["load_average_1m_5m"][0] > 0.5 * (ctx["usable_cores"] or 1):
        print("  warning : the machine is already busy; expect noisy numbers")
    print(flush=True)


# --- ingest runs ---------------------------------------------------------------------------------


@dataclass
class Ingest:
    """One ingest step: wrk's single webhooks, then the open-loop run; CPU of the hub (and RabbitMQ)."""

    single: wrk.WrkResult
    single_cpu: dict[str, float]
    latency: fixed_rate.FixedRateResult
    latency_cpu: dict[str, float]


def measure_ingest(run: Run, hub: procs.Server, ledger: ingest.Ledger, step: str) -> Ingest:
    """bench.ingest's single phase (1 s warm-up, then --duration under wrk), then --rate/s open-loop."""
    args = run.args
    assert hub.proc is not None
    pids = {"hub": hub.proc.pid, **fanout.service_pids(args)}
    url = hub.base_url + "/webhooks/github"
    settings = wrk.WrkSettings(threads=1, connections=args.connections, duration=args.duration)
    warm = wrk.WrkSettings(1, args.connections, 1, settings.timeout)
    print(f"{step}: single webhooks under wrk, then {args.rate:g}/s open-loop ...", flush=True)
    ledger.add_wrk(wrk.run_wrk(url, "webhook.lua", warm, ceilings.webhook_env()), 1)
    time.sleep(0.5)  # requests cut off at wrk's deadline finish before the next run
    window = fanout.CpuWindow(pids)
    window.start()
    single = wrk.run_wrk(url, "webhook.lua", settings, ceilings.webhook_env())
    single_cpu = window.stop()
    ledger.add_wrk(single, 1)
    ingest.check_wrk(run, f"{step} single", single)
    time.sleep(0.5)
    window.start()
    lat = fixed_rate.run_fixed_rate(hub.base_url, rate=args.rate, duration=args.duration)
    latency_cpu = window.stop()
    ledger.accepted += lat.accepted
    ledger.maybe += lat.scheduled - lat.completed
    ingest.check_latency(run, f"{step} latency", lat)
    print(
        f"  {single.accepted_rate:,.0f} webhooks/s (p99 {single.p99_ms:.1f} ms); open-loop p95 "
        f"{lat.p95_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms",
        flush=True,
    )
    return Ingest(single, single_cpu, lat, latency_cpu)


def ingest_rows(run: Run, step: str, got: Ingest, empty: Ingest | None) -> None:
    """Two rows per step; the backlog's judged against the empty queue's."""
    waiting = f"{run.args.backlog:,} waiting" if empty else "empty queue"
    single = ingest.wrk_row(f"{step}_single", f"   single webhook, {waiting}", got.single, 1, "ev/s")
    single.note = fanout.describe_cpu(got.single_cpu)
    lat = ingest.latency_row(f"{step}_latency", f"   {run.args.rate:g}/s open-loop, {waiting}", got.latency)
    lat.note = fanout.describe_cpu(got.latency_cpu)
    ratios: dict[str, float] = {}
    if empty is not None:
        if empty.single.accepted_rate:
            ratios["throughput"] = got.single.accepted_rate / empty.single.accepted_rate
        if empty.single.p99_ms:
            ratios["wrk_p99"] = got.single.p99_ms / empty.single.p99_ms
        for pct in ("p95", "p99"):
            base = getattr(empty.latency, f"{pct}_ms")
            if base:
                ratios[pct] = getattr(got.latency, f"{pct}_ms") / base
        if "throughput" in ratios:
            text = f"{ratios['throughput']:.2f}x" + (
                f", p99 {ratios['wrk_p99']:.2f}x" if "wrk_p99" in ratios else ""
            )
            judge(single, text, f">= {TARGET_RATE:g}x empty", ratios["throughput"] >= TARGET_RATE)
        if "p95" in ratios and "p99" in ratios:
            ok = max(ratios["p95"], ratios["p99"]) <= TARGET_LATENCY
            judge(
                lat,
                f"p95 {ratios['p95']:.2f}x, p99 {ratios['p99']:.2f}x",
                f"<= {TARGET_LATENCY:g}x empty",
                ok,
            )
    run.data[step] = {
        "single": asdict(got.single) | {"events_per_s": got.single.accepted_rate, "cpu": got.single_cpu},
        "latency": asdict(got.latency) | {"cpu": got.latency_cpu},
        "ratios_to_empty": ratios,
    }
    run.rows += [single, lat]


# --- load and recovery ---------------------------------------------------------------------------


def load_backlog(run: Run, hub: procs.Server, ledger: ingest.Ledger) -> None:
    """--backlog events into `down`'s queue through POST /events, in chunks so that the batch
    bodies of one chunk at a time are in memory."""
    args = run.args
    prefix = f"backlog-{uuid.uuid4().hex[:8]}"
    accepted, seconds, first_error = 0, 0.0, ""
    statuses: dict[str, int] = {}
    print(
        f"load: {args.backlog:,} events through POST /events, batches of {payloads.BATCH_SIZE} ...",
        flush=True,
    )
    for n, start in enumerate(range(0, args.backlog, LOAD_CHUNK)):
        count = min(LOAD_CHUNK, args.backlog - start)
        got = fanout.load_events(hub.base_url, f"{prefix}-{n}", BACKLOG_TYPE, count)
        accepted += got.accepted
        seconds += got.seconds
        for status, k in got.statuses.items():
            statuses[status] = statuses.get(status, 0) + k
        first_error = first_error or got.first_error
        if (start + count) % (4 * LOAD_CHUNK) == 0 or start + count == args.backlog:
            print(
                f"  {start + count:,} sent, {accepted:,} accepted ({accepted / seconds:,.0f} ev/s)",
                flush=True,
            )
    ledger.accepted += accepted
    if accepted != args.backlog:
        run.problem(
            f"load: {args.backlog - accepted:,} of {args.backlog:,} not accepted ({statuses}; {first_error})"
        )
    rate = accepted / seconds if seconds else 0.0
    run.data["load"] = {"accepted": accepted, "seconds": seconds, "rate": rate, "statuses": statuses}
    run.rows.append(
        Row(
            key="load",
            phase=f"   load {args.backlog:,} events, batches of {payloads.BATCH_SIZE}",
            rate=rate,
            unit="ev/s",
            note=f"{seconds:.0f}s, {fanout.LOAD_CONCURRENCY} batches in flight",
        )
    )


def reference(run: Run, hub: procs.Server, snk: procs.Server, store: str, namespace: str) -> None:
    """F: bench.fanout's hub_throughput on `down` itself, from an empty queue, before the backlog."""
    fanout.hub_throughput(run, hub, snk, store, namespace, "fanout", [SUB])
    for row in run.rows:
        if row.key == "fanout":
            row.phase = f"F  fan-out, {run.args.events:,} events from an empty queue"


def recovery(run: Run, hub: procs.Server, snk: procs.Server, store: str) -> None:
    """Resume `down` with the backlog waiting; its deliveries/s over the window's middle 80%."""
    args = run.args
    assert hub.proc is not None and snk.proc is not None
    print(f"recovery: resuming {SUB}, deliveries for {args.drain_seconds:g}s ...", flush=True)
    resumed = time.perf_counter()
    ingest.set_subscription_states(store, [SUB], paused=False, reason="bench.backlog")
    # "expected" is out of reach: the window ends at the cap (or a stall), never at completion
    drain = fanout.watch(
        snk.base_url,
        {SINK_PATH: 10**12},
        {"hub": hub.proc.pid, "sink": snk.proc.pid, **fanout.service_pids(args)},
        cap_s=args.drain_seconds + STATE_POLL_S,
    )
    ended = time.perf_counter()
    times = [
        t for t in sink.dump(snk.base_url, SINK_PATH).get(SINK_PATH, {}).values() if resumed < t <= ended
    ]
    rates = fanout.spread(times)
    if rates.deliveries < 10:
        run.problem(f"recovery: {rates.deliveries} deliveries in {args.drain_seconds:g}s: the drain stalled")
    metrics = fanout.delivery_metrics(hub.base_url, [SUB])
    run.data["drain"] = {**asdict(rates), "cpu": drain.cpu, "window_s": drain.seconds, **metrics}
    row = Row(
        key="drain",
        phase=f"   recovery, {args.backlog:,} waiting ({args.drain_seconds:g}s window)",
        rate=rates.steady_rate,
        unit="deliv/s",
        note=fanout.describe_cpu(drain.cpu),
    )
    ref = run.data.get("fanout", {}).get("steady_rate")
    if ref:
        ratio = rates.steady_rate / ref
        judge(row, f"{ratio:.2f} of F", f">= {TARGET_RATE:g}", ratio >= TARGET_RATE)
    run.rows.append(row)
    print(f"  {rates.steady_rate:,.0f} deliveries/s ({fanout.describe_cpu(drain.cpu)})", flush=True)


# --- the run -------------------------------------------------------------------------------------


def run_hub(run: Run, snk: procs.Server, tmp: Path, stamp: str) -> None:
    """Start the hub with `down` paused, run the steps, stop it, and delete what the run made."""
    args = run.args
    namespace = f"benchlog{uuid.uuid4().hex[:8]}"
    run.data["namespace"] = namespace
    ledger = ingest.Ledger()
    with ingest.store_url(args.store, tmp) as store:
        config = tmp / "hookhub.yaml"
        config.write_text(
            yaml.safe_dump(hub_config(args, store, namespace, tmp, snk.base_url), sort_keys=False)
        )
        ingest.set_subscription_states(store, [SUB], paused=True, reason="bench.backlog")
        hub = fanout.hub_server(config, tmp)
        try:
            print(
                f"starting {hub.name} (namespace {namespace}, store {store.split('@')[-1]}) ...", flush=True
            )
            hub.start(procs.clean_env())
            hub.wait_ready("/readyz", timeout=60)
            print(
                f"subscription {SUB}: paused in the store before start; its queue holds what it gets",
                flush=True,
            )
            reference(run, hub, snk, store, namespace)
            set_down(run, hub, store, paused=True)
            wait_archive(run, hub, namespace, "empty")
            empty = measure_ingest(run, hub, ledger, "empty")
            ingest_rows(run, "empty", empty, None)
            check_held(run, hub, namespace, ledger, "after empty", tmp)
            load_backlog(run, hub, ledger)
            check_held(run, hub, namespace, ledger, "after load", tmp)
            wait_archive(run, hub, namespace, "backlog")
            ingest_rows(run, "backlog", measure_ingest(run, hub, ledger, "backlog"), empty)
            check_held(run, hub, namespace, ledger, "after backlog", tmp)
            recovery(run, hub, snk, store)
        finally:
            hub.stop()
            if hub.log_path.exists():
                RESULTS_DIR.mkdir(exist_ok=True)
                shutil.copy(hub.log_path, RESULTS_DIR / f"{kind(args)}-{stamp}-hub.log")
            guarded(run, f"deleting namespace {namespace}", lambda: cleanup(run, namespace))


def verdict(run: Run) -> None:
    """One line for the issue's claim, from the three judged rows; incomplete if one is missing."""
    judged = {r.key: r.verdict for r in run.rows if r.verdict}
    keys = ("backlog_single", "backlog_latency", "drain")
    if not all(k in judged for k in keys):
        line = "incomplete: not every step was measured"
    else:
        line = "OK" if all(judged[k] == "OK" for k in keys) else "MISS"
        line += f" (throughput {judged[keys[0]]}, latency {judged[keys[1]]}, recovery {judged[keys[2]]})"
    run.data["verdict"] = line
    run.footer.append(f"a backlog does not slow ingest, recovery at the fan-out rate: {line}")


def kind(args: argparse.Namespace) -> str:
    return "backlog-" + ("rabbitmq" if fanout.amqp(args) else "sqlite")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C too: asyncio.run's own SIGINT handler only cancels its task, and a load whose
    # aiohttp calls turn that cancellation into a client error would carry on with the next chunk.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, ingest._terminate)
    run = Run(args)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    ctx = machine_context(args)
    run.data["machine"] = ctx
    print_context(ctx, args)
    missing = fanout.preflight(args, ctx)
    if missing:
        print("cannot run:", *missing, sep="\n  - ", file=sys.stderr)
        return 2
    wrk.ensure_wrk()
    started = time.monotonic()
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="hookhub-bench-backlog-") as tmp_name:
            tmp = Path(tmp_name)
            snk = sink.sink_server(tmp)
            with procs.running(snk, procs.clean_env(), "/readyz", timeout=30):
                try:
                    run_hub(run, snk, tmp, stamp)
                except Exception as exc:  # cleanup already ran in run_hub's finally
                    run.problem(f"hub: {describe(exc)}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        verdict(run)
        results.report(
            run,
            started,
            interrupted,
            lambda: results.write_summary(run, stamp, kind(args), TARGETS),
            ROW_ORDER,
        )
    return results.exit_code(run, interrupted)


if __name__ == "__main__":
    raise SystemExit(main())
