"""The backlog bench's hub chores: its config, `down`'s queue and the archive queue (depths, what
they cost the broker), pausing and resuming `down`, and deleting the run's queues afterwards.

Split from bench.backlog, which runs the steps; both brokers are handled here, RabbitMQ through
its own client and rabbitmqctl, the embedded SQLite broker through the hub's admin API.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import fanout, ingest, payloads, procs, rabbit
from bench.results import Run, describe

SUB = "down"
SINK_PATH = f"/hub/{SUB}"
ARCHIVE_SETTLED = 1_000  # archive queue depth below which the archiver counts as caught up
STATE_POLL_S = 2.0  # how often the dispatcher reads the subscription states
SHOWN_QUEUES = (f"sub.{SUB}", "archive")  # the queues whose footprint is printed


def hub_config(
    args: argparse.Namespace, store: str, namespace: str, tmp: Path, sink_url: str
) -> dict[str, Any]:
    """One GitHub provider, one producer, and `down`, which takes every event the run sends."""
    down = fanout.subscription(sink_url, SINK_PATH, "com.bench.#", args.max_in_flight)
    down["types"] = ["com.github.#", "com.bench.#"]
    broker = f"sqlite:///{tmp}/broker.db" if args.broker == "sqlite" else args.broker
    return payloads.hub_config(broker, store, namespace, tmp, {SUB: down})


def depths(args: argparse.Namespace, hub: procs.Server, namespace: str) -> dict[str, int | None]:
    """Messages ready in `down`'s queue and in the archive queue: from RabbitMQ itself, or from
    the hub's GET /admin/broker for the embedded broker (whose file only the hub should open)."""
    queues = [f"{namespace}.sub.{SUB}", f"{namespace}.archive"]
    if fanout.amqp(args):
        return rabbit.queue_depths(args.broker, queues)
    req = urllib.request.Request(
        hub.base_url + "/admin/broker", headers={"Authorization": f"Bearer {payloads.ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        found = {q["name"]: int(q["depth"]) for q in json.load(resp)["queues"]}
    return {q: found.get(q) for q in queues}


def broker_footprint(args: argparse.Namespace, namespace: str, tmp: Path) -> str:
    """What holding the backlog costs the broker: the quorum queues' memory (rabbitmqctl, best
    effort), or the SQLite file and its WAL."""
    if not fanout.amqp(args):
        size = sum(p.stat().st_size for p in tmp.glob("broker.db*") if p.is_file())
        return f"SQLite broker files {size / 2**20:,.0f} MiB"
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return "queue memory: rabbitmqctl not found"
    try:
        out = subprocess.run(
            [ctl, "-q", "list_queues", "name", "messages", "memory"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"queue memory: {describe(exc)}"
    parts = []
    for line in out.splitlines():
        cells = line.split()
        short = cells[0].removeprefix(namespace + ".") if cells else ""
        if len(cells) == 3 and short in SHOWN_QUEUES and cells[2].isdigit():
            parts.append(f"{short} {int(cells[1]):,} msgs {int(cells[2]) / 2**20:,.0f} MiB")
    return "RabbitMQ queue memory: " + (", ".join(parts) or "not listed")


def wait_archive(run: Run, hub: procs.Server, namespace: str, step: str) -> None:
    """Wait until the archiver has caught up, so an ingest run does not share the box with its
    catch-up; a queue still deep after --archive-wait is measured as it is, and said so."""
    args = run.args
    queue = f"{namespace}.archive"
    started = time.monotonic()
    depth = depths(args, hub, namespace).get(queue) or 0
    first = depth
    while depth > ARCHIVE_SETTLED and time.monotonic() - started < args.archive_wait:
        time.sleep(1.0)
        depth = depths(args, hub, namespace).get(queue) or 0
    seconds = time.monotonic() - started
    run.data.setdefault("archive_wait", {})[step] = {
        "depth_before": first,
        "depth_after": depth,
        "s": seconds,
    }
    if first > ARCHIVE_SETTLED:
        rate = f" ({(first - depth) / seconds:,.0f} ev/s)" if seconds > 1 else ""
        print(f"  archive queue: {first:,} -> {depth:,} in {seconds:.0f}s{rate}", flush=True)
    if depth > ARCHIVE_SETTLED:
        run.footer.append(f"{step}: the archiver was still {depth:,} events behind when it was measured")


def set_down(run: Run, hub: procs.Server, store: str, paused: bool) -> None:
    """Pause or resume `down` in the store, and wait until the dispatcher has followed."""
    ingest.set_subscription_states(store, [SUB], paused=paused, reason="bench.backlog")
    want = 0.0 if paused else 1.0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        active = [
            value
            for name, labels, value in fanout.hub_metrics(hub.base_url)
            if name == "hookhub_subscription_active" and labels.get("subscription") == SUB
        ]
        if active == [want]:
            return
        time.sleep(0.25)
    run.problem(f"the dispatcher did not {'pause' if paused else 'resume'} {SUB} within 15 s")


def check_held(
    run: Run, hub: procs.Server, namespace: str, ledger: ingest.Ledger, step: str, tmp: Path
) -> None:
    """`down`'s queue must hold every event answered 202 since it was paused, and no more than
    those plus the requests cut off at a run's end."""
    time.sleep(1.0)  # publishes of requests cut off at wrk's deadline finish
    queue = f"{namespace}.sub.{SUB}"
    held = depths(run.args, hub, namespace).get(queue)
    footprint = broker_footprint(run.args, namespace, tmp)
    run.data.setdefault("held", {})[step] = {
        "queue_depth": held,
        "accepted_202": ledger.accepted,
        "unanswered": ledger.maybe,
        "footprint": footprint,
    }
    line = (
        f"{step}: {queue} holds {'no queue' if held is None else f'{held:,}'} events "
        f"(held by the paused subscription {SUB}) for {ledger.accepted:,} answered 202; {footprint}"
    )
    print("  " + line, flush=True)
    run.footer.append(line)
    if held is None or held < ledger.accepted:
        run.problem(f"{step}: {queue} holds {held} events, {ledger.accepted:,} were answered 202")
    elif held > ledger.accepted + ledger.maybe:
        run.problem(f"{step}: {queue} holds {held - ledger.accepted:,} more events than were answered 202")


def cleanup(run: Run, namespace: str) -> None:
    """Every queue and exchange of the namespace, the backlog with them; rabbitmqctl checks."""
    if not fanout.amqp(run.args):
        return  # the SQLite broker's files go with the temporary directory
    for attempt in range(3):
        deleted = rabbit.delete_namespace(run.args.broker, namespace, [SUB])
        conn = rabbit.connect(run.args.broker)
        try:
            for suffix in ("archive", "dead", "topology"):
                channel = conn.channel()
                channel.queue_delete(f"{namespace}.{suffix}")
                channel.close()
                deleted.append(f"{namespace}.{suffix}")
        finally:
            conn.close()
        run.data["deleted"] = deleted
        queues, exchanges = rabbit.extra_names(namespace)
        if not queues and not exchanges:
            return
        time.sleep(1.0 + attempt)
    run.problem(f"left on the broker after cleanup: {queues + exchanges}")
