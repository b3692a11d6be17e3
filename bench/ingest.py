"""Ingest benchmark (issues #2, #9): hub throughput and latency as ratios to ceilings from the same run.

    .venv/bin/python -m bench.ingest [--duration 10] [--store postgres|sqlite]
                                     [--only single|batch|latency|ceilings]

Phases, each bounded in time and aimed only at 127.0.0.1:
  ceilings  A: bare ASGI app under the same uvicorn flags and wrk script as the hub;
            D: the durable limit, a raw ASGI app answering 202 after a confirmed quorum publish;
            P: the peer a team would hand-roll (FastAPI + aio-pika), both under A's flags and script;
            B: bare pika publisher with pipelined confirms into hookhub's topology shape;
            plus the fixed-rate client against the bare app (the latency ceiling).
  single    POST /webhooks/github, signed, unique X-GitHub-Delivery each, 64 connections:
            events/s vs D (>= 0.8), also printed as ratios to A and P.
  batch     POST /events, 100 CloudEvents per request: events/s vs B (>= 0.8).
  latency   1,000 webhooks/s open-loop for --duration seconds: p50/p95/p99 (p99 < 20 ms).
Afterwards the hub is stopped, its subscription queue must hold every event answered 202 (no loss,
checked for D and P too),
and the run's queues, exchanges and store are deleted, also on errors and Ctrl-C.
Exit status: 0 when every request was accepted and nothing was lost (targets are reported, not
enforced: a shared 2-core box is too noisy to gate on), 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench import ceilings, fixed_rate, hubctl, payloads, procs, rabbit, results, wrk

# Shared with bench.fanout and the others, which reach them through this module.
from bench.hubctl import set_subscription_states, store_url
from bench.results import RESULTS_DIR, Row, Run, describe, exit_code, guarded, judge, report

TARGET_SINGLE = 0.8  # of D, issue #9
TARGET_BATCH = 0.8
TARGET_P99_MS = 20.0
TARGETS = {"single_vs_D": TARGET_SINGLE, "batch_vs_B": TARGET_BATCH, "p99_ms": TARGET_P99_MS}
LATENCY_RATE = 1000.0
# Table order: each hub row right under the ceilings it is divided by.
ROW_ORDER = (
    "ceiling_a",
    "ceiling_d",
    "peer",
    "hub_single",
    "ceiling_b",
    "hub_batch",
    "latency_ceiling",
    "hub_latency",
)
# Ceiling D and peer P: bench.ceilings' kind, row key, and the label of their table row.
REFERENCE_ROWS = (
    ("durable", "ceiling_d", "D  durable ASGI (quorum, confirms)"),
    ("peer", "peer", "P  peer FastAPI + aio-pika"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run (default 10)")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--only", choices=["single", "batch", "latency", "ceilings"])
    parser.add_argument("--workers", type=int, default=1, help="hookhub run --workers")
    parser.add_argument("--broker", default=rabbit.DEFAULT_URL, help="RabbitMQ URL (127.0.0.1 only)")
    # Many providers deliver at once: with few connections a hub whose request waits a few ms on
    # the store and the broker's confirm is bounded by Little's law, not by what it can do. 64 is
    # where issue #9 sets the target; A, D and P get the same.
    parser.add_argument("--connections", type=int, default=64, help="wrk connections, single (default 64)")
    parser.add_argument("--batch-connections", type=int, default=16, help="wrk connections, batch")
    parser.add_argument("--messages", type=int, default=100_000, help="ceiling B message count")
    parser.add_argument("--window", type=int, default=2_000, help="ceiling B unconfirmed in flight")
    parser.add_argument(
        "--hub",
        choices=["hookhub", "bare"],
        default="hookhub",
        help="'bare' puts the bare ASGI app in the hub's place: a self-test of the harness",
    )
    args = parser.parse_args(argv)
    results.check_broker_arg(parser, args.broker)
    return args


def wants(args: argparse.Namespace, phase: str) -> bool:
    """Whether this run includes `phase`, counting the ceilings each hub phase is divided by."""
    needs = {
        "ceiling_a": {"single", "ceilings"},
        "ceiling_d": {"single", "ceilings"},
        "peer": {"single", "ceilings"},
        "ceiling_b": {"batch", "ceilings"},
        "latency_ceiling": {"latency", "ceilings"},
        "single": {"single"},
        "batch": {"batch"},
        "latency": {"latency"},
    }
    return args.only is None or args.only in needs[phase]


# --- machine context -----------------------------------------------------------------------------


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


def machine_context(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on, printed first so nobody compares runs from different boxes."""
    wrk_path = wrk.ensure_wrk()
    wrk_version = subprocess.run([wrk_path, "-v"], capture_output=True, text=True, check=False).stdout
    return {
        **results.machine_basics(),
        "uvicorn": _version("uvicorn"),
        "pika": _version("pika"),
        "aio_pika": _version("aio-pika"),  # peer P's client
        "rabbitmq": rabbit.server_version(args.broker),
        "wrk": wrk_version.split("[")[0].strip() or wrk_path,
        "store": args.store,
        "duration_s": args.duration,
    }


def print_context(ctx: dict[str, Any]) -> None:
    print("hookhub ingest bench")
    print(
        f"  machine : {ctx['cores']} cores ({ctx['usable_cores']} usable), "
        f"load {ctx['load_average_1m_5m'][0]}/{ctx['load_average_1m_5m'][1]} (1m/5m), {ctx['platform']}"
    )
    print(
        f"  software: Python {ctx['python']}, uvicorn {ctx['uvicorn']}, pika {ctx['pika']}, "
        f"RabbitMQ {ctx['rabbitmq']}, {ctx['wrk']}"
    )
    print(f"  settings: store {ctx['store']}, {ctx['duration_s']:g}s per load run")
    if ctx["load_average_1m_5m"][0] > 0.5 * (ctx["usable_cores"] or 1):
        print("  warning : the machine is already busy; expect noisy numbers")
    print(flush=True)


def preflight(args: argparse.Namespace, ctx: dict[str, Any]) -> list[str]:
    """Services this run needs that are down: better said at once than after a 60 s wait."""
    missing = []
    runs_hub = args.hub == "hookhub" and args.only != "ceilings"
    brokered = ("ceiling_b", "ceiling_d", "peer")
    if (runs_hub or any(wants(args, k) for k in brokered)) and str(ctx["rabbitmq"]).startswith("unreachable"):
        missing.append(f"RabbitMQ is not reachable at {args.broker.split('@')[-1]}")
    if runs_hub and args.store == "postgres":
        try:
            with socket.create_connection(("127.0.0.1", 5432), timeout=3):
                pass
        except OSError:
            missing.append("PostgreSQL is not reachable at 127.0.0.1:5432 (or use --store sqlite)")
    return missing


# --- hub process ---------------------------------------------------------------------------------


def hub_config(broker: str, store: str, namespace: str, tmp: Path) -> dict[str, Any]:
    """The hub's configuration: one GitHub provider, one producer, one subscription for all events."""
    sink = {"url": "http://127.0.0.1:9/unused", "types": ["com.github.#", "com.bench.#"]}
    return payloads.hub_config(broker, store, namespace, tmp, {"sink": sink})


def hub_server(kind: str, config: Path, tmp: Path, workers: int = 1) -> procs.Server:
    if kind == "bare":
        server = procs.bare_asgi_server(tmp)
        server.name = "stand-in hub (bare ASGI)"
        return server
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
        *([f"--workers={workers}"] if workers > 1 else []),
    ]
    name = "hub (hookhub run)" if workers == 1 else f"hub (hookhub run --workers {workers})"
    return procs.Server(name, argv, port, tmp / "hub.log", cwd=tmp)


def pause_in_store(store: str) -> str:
    """Pause the subscription before the hub starts (see `hubctl.pause_sink` for why); the admin API
    is the fallback when the store cannot be written from here."""
    try:
        set_subscription_states(store, ["sink"], paused=True, reason="bench.ingest")
    except Exception as exc:
        return f"could not pause in the store ({describe(exc)})"
    return "paused in the store before start"


# --- phases --------------------------------------------------------------------------------------


def wrk_row(key: str, phase: str, result: wrk.WrkResult, per_request: int, unit: str) -> Row:
    return Row(
        key=key,
        phase=phase,
        rate=result.accepted_rate * per_request,
        unit=unit,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
    )


def check_wrk(run: Run, phase: str, result: wrk.WrkResult) -> None:
    if result.errors:
        run.problem(f"{phase}: {result.errors} requests not answered 202: {result.describe_errors()}")


def latency_row(key: str, phase: str, result: fixed_rate.FixedRateResult) -> Row:
    return Row(
        key=key,
        phase=phase,
        rate=result.achieved_rate,
        unit="req/s",
        p50_ms=result.p50_ms,
        p95_ms=result.p95_ms,
        p99_ms=result.p99_ms,
        note=f"max {result.max_ms:.1f} ms, client lag max {result.max_send_lag_ms:.1f} ms",
    )


def check_latency(run: Run, phase: str, result: fixed_rate.FixedRateResult) -> None:
    if result.errors:
        run.problem(
            f"{phase}: {result.errors} of {result.scheduled} requests not answered 202 "
            f"(statuses {result.statuses}; first: {result.first_error})"
        )


def run_references(run: Run, settings: wrk.WrkSettings, tmp: Path) -> None:
    """Ceiling D and peer P, each on its own server and namespace; one failing spares the other."""
    for kind, key, label in REFERENCE_ROWS:
        if not wants(run.args, key):
            continue
        letter = label.split()[0]
        print(f"{'ceiling' if kind == 'durable' else 'peer'} {letter}: {label[3:]} under wrk ...", flush=True)
        try:
            ref = ceilings.measure_reference(kind, run.args.broker, settings, tmp)
        except Exception as exc:
            run.problem(f"{letter}: {describe(exc)}")
            continue
        check_wrk(run, letter, ref.result)
        verdict = "OK" if ref.no_loss else "LOSS"
        line = f"no loss {letter}: {ref.describe_queue()}  -> {verdict}"
        if not ref.no_loss:
            run.problem(f"{letter}: {ref.describe_queue()}")
        run.footer.append(line)
        run.data[key] = ref.summary()
        row = wrk_row(key, label, ref.result, 1, "req/s")
        row.note = f"no loss {verdict}"
        run.rows.append(row)


def run_ceilings(run: Run, settings: wrk.WrkSettings, tmp: Path) -> None:
    """Ceiling A and the latency ceiling share one bare server, D and P have their own, and ceiling B
    runs in its own process."""
    args = run.args
    if wants(args, "ceiling_a") or wants(args, "latency_ceiling"):
        server = procs.bare_asgi_server(tmp)
        with procs.running(server, procs.clean_env(), "/readyz", timeout=30):
            if wants(args, "ceiling_a"):
                print("ceiling A: bare ASGI under wrk ...", flush=True)
                url = server.base_url + "/webhooks/github"
                warm = wrk.WrkSettings(settings.threads, settings.connections, 1, settings.timeout)
                wrk.run_wrk(url, "webhook.lua", warm, ceilings.webhook_env())
                a = wrk.run_wrk(url, "webhook.lua", settings, ceilings.webhook_env())
                check_wrk(run, "ceiling A", a)
                run.data["ceiling_a"] = asdict(a) | {"rate": a.rate}
                run.rows.append(
                    wrk_row("ceiling_a", f"A  bare ASGI (wrk {' '.join(settings.args()[:3])})", a, 1, "req/s")
                )
            if wants(args, "latency_ceiling"):
                print(f"latency ceiling: {LATENCY_RATE:g}/s open-loop against bare ASGI ...", flush=True)
                lat = fixed_rate.run_fixed_rate(server.base_url, rate=LATENCY_RATE, duration=args.duration)
                check_latency(run, "latency ceiling", lat)
                run.data["latency_ceiling"] = asdict(lat)
                run.rows.append(
                    latency_row("latency_ceiling", f"L  bare ASGI at {LATENCY_RATE:g}/s open-loop", lat)
                )
    run_references(run, settings, tmp)
    if wants(args, "ceiling_b"):
        print(f"ceiling B: pika publisher, {args.messages:,} persistent messages ...", flush=True)
        b = ceilings.run_publisher_process(args.broker, args.messages, args.window, deadline_s=60)
        if b.nacked or b.timed_out or b.queued != b.acked:
            run.problem(
                f"ceiling B: {b.nacked} nacked, timed out={b.timed_out}, queued {b.queued} != {b.acked}"
            )
        run.data["ceiling_b"] = asdict(b) | {"rate": b.rate}
        run.rows.append(
            Row(
                key="ceiling_b",
                phase=f"B  bare pika publisher ({b.acked:,} msgs)",
                rate=b.rate,
                unit="msg/s",
                note=f"{b.window:,} unconfirmed in flight",
            )
        )


def batch_env() -> dict[str, str]:
    prefix, suffix = payloads.event_template()
    return {
        "BENCH_EVENT_PREFIX": prefix,
        "BENCH_EVENT_SUFFIX": suffix,
        "BENCH_BATCH_SIZE": str(payloads.BATCH_SIZE),
        "BENCH_TOKEN": payloads.PRODUCER_TOKEN,
        "BENCH_RUN_ID": uuid.uuid4().hex[:12],
        "BENCH_PATH": "/events",
    }


@dataclass
class Ledger:
    """What the hub answered 202 (events it must have queued) and what it may have queued besides."""

    accepted: int = 0
    maybe: int = 0  # events in requests still unanswered when a load run stopped

    def add_wrk(self, result: wrk.WrkResult, per_request: int) -> None:
        self.accepted += result.n202 * per_request
        self.maybe += result.unanswered * per_request


def single_ratios(run: Run, rate: float) -> dict[str, float]:
    """The hub single's rate over D (judged), A and P, for those this run measured."""
    ratios = {}
    for letter, key in (("D", "ceiling_d"), ("A", "ceiling_a"), ("P", "peer")):
        ceiling = run.data.get(key, {}).get("rate")
        if ceiling:
            ratios[letter] = rate / ceiling
    return ratios


def run_hub_phases(run: Run, hub: procs.Server, settings: wrk.WrkSettings, ledger: Ledger) -> None:
    args = run.args
    b = run.data.get("ceiling_b", {}).get("rate")

    def load(
        script: str, path: str, cfg: wrk.WrkSettings, env: Callable[[], dict[str, str]], per: int
    ) -> wrk.WrkResult:
        """A 1 s warm-up run, then the measured one; both count in the ledger."""
        warm = wrk.WrkSettings(cfg.threads, cfg.connections, 1, cfg.timeout)
        for c in (warm, cfg):
            result = wrk.run_wrk(hub.base_url + path, script, c, env())
            ledger.add_wrk(result, per)
            time.sleep(0.5)  # let requests cut off at wrk's deadline finish before the next run
        return result

    # Latency first, on empty queues: after the throughput runs the broker is still writing
    # their backlog (100k+ messages), which would measure that backlog, not the hub.
    if wants(args, "latency"):
        print(f"hub latency: {LATENCY_RATE:g} webhooks/s open-loop ...", flush=True)
        lat = fixed_rate.run_fixed_rate(hub.base_url, rate=LATENCY_RATE, duration=args.duration)
        ledger.accepted += lat.accepted
        ledger.maybe += lat.scheduled - lat.completed
        check_latency(run, "hub latency", lat)
        row = latency_row("hub_latency", f"   hub at {LATENCY_RATE:g}/s open-loop", lat)
        ceiling = run.data.get("latency_ceiling")
        ratio = f"p99 {lat.p99_ms / ceiling['p99_ms']:.1f}x L" if ceiling and ceiling["p99_ms"] else ""
        judge(row, ratio, f"p99 < {TARGET_P99_MS:g} ms", lat.p99_ms < TARGET_P99_MS)
        run.data["hub_latency"] = asdict(lat)
        run.rows.append(row)

    if wants(args, "single"):
        print("hub single: POST /webhooks/github under wrk ...", flush=True)
        single = load("webhook.lua", "/webhooks/github", settings, ceilings.webhook_env, 1)
        check_wrk(run, "hub single", single)
        row = wrk_row("hub_single", "   hub single webhook", single, 1, "ev/s")
        ratios = single_ratios(run, single.accepted_rate)
        row.ratio = ", ".join(f"{r:.2f} {letter}" for letter, r in ratios.items())
        if "D" in ratios:
            judge(row, row.ratio, f">= {TARGET_SINGLE} D", ratios["D"] >= TARGET_SINGLE)
        run.data["hub_single"] = asdict(single) | {"events_per_s": single.accepted_rate, "ratios": ratios}
        run.rows.append(row)

    if wants(args, "batch"):
        print(f"hub batch: POST /events, {payloads.BATCH_SIZE} events per request ...", flush=True)
        cfg = wrk.WrkSettings(settings.threads, args.batch_connections, settings.duration, settings.timeout)
        batch = load("batch.lua", "/events", cfg, batch_env, payloads.BATCH_SIZE)
        check_wrk(run, "hub batch", batch)
        row = wrk_row(
            "hub_batch",
            f"   hub batch x{payloads.BATCH_SIZE} (-c{cfg.connections})",
            batch,
            payloads.BATCH_SIZE,
            "ev/s",
        )
        events_per_s = batch.accepted_rate * payloads.BATCH_SIZE
        if b:
            ratio = events_per_s / b
            judge(row, f"{ratio:.2f} of B", f">= {TARGET_BATCH}", ratio >= TARGET_BATCH)
        row.note = "latency per request"
        run.data["hub_batch"] = asdict(batch) | {"events_per_s": events_per_s}
        run.rows.append(row)


def verify_no_loss(run: Run, namespace: str, ledger: Ledger) -> None:
    """Every 202 must be a message in `<ns>.sub.sink`; counted after the hub stopped, so any
    message a consumer held unacknowledged is back in the queue."""
    sink, unrouted = f"{namespace}.sub.sink", f"{namespace}.unrouted"
    extra_queues, _ = rabbit.extra_names(namespace)
    depths = rabbit.queue_depths(run.args.broker, sorted({sink, unrouted, *extra_queues}))
    queued = depths.get(sink)
    info: dict[str, Any] = {"accepted_202_events": ledger.accepted, "unanswered_events": ledger.maybe}
    info["queue_depths"] = depths
    run.data["no_loss"] = info
    held = "no such queue" if queued is None else f"{queued:,}"
    line = f"no loss: {ledger.accepted:,} events answered 202; {sink} holds {held}"
    others = {q: d for q, d in depths.items() if q != sink and d}
    if others:
        line += f"; other queues {others}"
    if queued is None or queued < ledger.accepted:
        info["verdict"] = "LOSS"
        line += "  -> LOSS"
        missing = ledger.accepted - (queued or 0)
        run.problem(f"{missing:,} events answered 202 are not in {sink} (queues: {depths})")
    elif queued > ledger.accepted + ledger.maybe:
        info["verdict"] = "EXTRA"
        line += "  -> MORE than accepted"
        run.problem(
            f"{sink} holds {queued - ledger.accepted:,} more events than were answered 202, beyond the "
            f"{ledger.maybe:,} in requests cut off at a load run's end: duplicates?"
        )
    else:
        info["verdict"] = "OK"
        extra = queued - ledger.accepted
        line += f" (+{extra:,} from requests cut off at a load run's end)" if extra else ""
        line += "  -> OK"
    if depths.get(unrouted):
        run.problem(f"{depths[unrouted]:,} bench events in {unrouted}: the sink's patterns match them all")
    print(line, flush=True)
    run.footer.append(line)


def write_summary(
    run: Run, stamp: str, kind: str = "ingest", targets: dict[str, float] | None = None
) -> Path:
    """The JSON summary; the ingest targets unless a caller (bench.fanout) gives its own."""
    return results.write_summary(run, stamp, kind, TARGETS if targets is None else targets)


# --- main ----------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM takes the same way out as Ctrl-C, through every `finally` that cleans up."""
    raise KeyboardInterrupt(f"signal {signum}")


def keep_log(hub: procs.Server, stamp: str) -> None:
    """Copy the hub's output next to the summary: the temporary directory goes away."""
    if hub.log_path.exists():
        RESULTS_DIR.mkdir(exist_ok=True)
        shutil.copy(hub.log_path, RESULTS_DIR / f"ingest-{stamp}-hub.log")


def cleanup_namespace(run: Run, namespace: str) -> None:
    run.data["deleted"] = rabbit.delete_namespace(run.args.broker, namespace)


def run_hub(run: Run, settings: wrk.WrkSettings, tmp: Path, stamp: str) -> None:
    """Start the hub on a fresh namespace and store, load it, stop it, check, and clean up."""
    args = run.args
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    run.data["namespace"] = namespace
    ledger = Ledger()
    loaded = False
    with store_url(args.store, tmp) as store:
        config = tmp / "hookhub.yaml"
        config.write_text(yaml.safe_dump(hub_config(args.broker, store, namespace, tmp), sort_keys=False))
        hub = hub_server(args.hub, config, tmp, args.workers)
        paused = pause_in_store(store) if args.hub == "hookhub" else ""
        try:
            print(f"starting {hub.name} (namespace {namespace}, store {store}) ...", flush=True)
            hub.start(procs.clean_env())
            hub.wait_ready("/readyz", timeout=60)
            if args.hub == "hookhub":
                if not paused.startswith("paused"):
                    paused = hubctl.pause_sink(hub.base_url)
                run.data["sink_pause"] = paused
                print(f"subscription sink: {paused}", flush=True)
            run_hub_phases(run, hub, settings, ledger)
            loaded = True
            time.sleep(1.0)  # in-flight publishes finish before the hub is asked to stop
        finally:
            hub.stop()
            keep_log(hub, stamp)
            if args.hub == "hookhub" and loaded:
                guarded(run, "no-loss check", lambda: verify_no_loss(run, namespace, ledger))
            elif args.hub == "hookhub":
                run.footer.append("no loss: not checked (the load did not complete)")
            guarded(run, f"deleting namespace {namespace}", lambda: cleanup_namespace(run, namespace))
    if args.hub == "bare":
        run.footer.append("no loss: not checked (the stand-in hub publishes nothing)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    run = Run(args)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    ctx = machine_context(args)
    run.data["machine"] = ctx
    print_context(ctx)
    missing = preflight(args, ctx)
    if missing:
        print("cannot run:", *missing, sep="\n  - ", file=sys.stderr)
        return 2
    settings = wrk.WrkSettings(threads=1, connections=args.connections, duration=args.duration)
    started = time.monotonic()
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="hookhub-bench-") as tmp_name:
            tmp = Path(tmp_name)
            try:
                run_ceilings(run, settings, tmp)
            except Exception as exc:  # report it, and still measure the hub
                run.problem(f"ceilings: {describe(exc)}")
            if args.only != "ceilings":
                try:
                    run_hub(run, settings, tmp, stamp)
                except Exception as exc:  # cleanup already ran in run_hub's finally blocks
                    run.problem(f"hub: {describe(exc)}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        report(run, started, interrupted, lambda: write_summary(run, stamp), ROW_ORDER)
    return exit_code(run, interrupted)


if __name__ == "__main__":
    raise SystemExit(main())
