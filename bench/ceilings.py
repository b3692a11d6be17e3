"""The ceilings (and the peer) the hub's ingest numbers are divided by, measured on this box in this run.

A, "bare ASGI": bench.bare_asgi under uvicorn with hookhub's exact server flags, loaded by the same
wrk command and Lua script as the hub. No Python web app answers faster on this box, so
hub / A is how much of the HTTP budget the hub's own work (verify, validate, publish) takes.

B, "bare pika publisher": one process publishing persistent messages of the bench events' size,
with pipelined publisher confirms, into hookhub's topology shape (topic exchange with an alternate
exchange, quorum queue). That is what durable enqueueing costs on this box; the batch endpoint
cannot beat it, so hub batch / B is how close the hub gets to the broker's limit.

D, "durable limit": bench.durable_asgi, a raw ASGI app that publishes each body persistent to a
quorum queue with pipelined confirms and answers 202 after the confirm, under the same flags and wrk
command as A. Any receiver that keeps "2xx only after the broker's confirm" pays at least this, so
hub single / D is the figure issue #9 sets a target for.

P, "peer": bench.peer_fastapi, the FastAPI + aio-pika receiver a team would hand-roll (signature
check, pydantic, confirmed publish), measured the same way. Not a ceiling: a point of comparison.

`python -m bench.ceilings` measures them alone; `python -m bench.ceilings publisher --json` is how
bench.ingest runs ceiling B in its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pika
import pika.spec

from bench import payloads, procs, rabbit, wrk


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Ceiling B's outcome: confirmed messages per second over the whole run."""

    messages: int
    acked: int
    nacked: int
    seconds: float
    window: int
    queued: int | None  # depth of the bound queue afterwards: must equal `acked`
    timed_out: bool

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0


class ConfirmPublisher:
    """Publish `total` messages keeping up to `window` unconfirmed in flight (SelectConnection).

    Pipelining is the point: waiting for each confirm would measure the round trip, not the
    broker's durable throughput, and hookhub's publisher pipelines too.
    """

    def __init__(self, url: str, exchange: str, total: int, window: int, deadline_s: float) -> None:
        self.url = url
        self.exchange = exchange
        self.total = total
        self.window = window
        self.deadline_s = deadline_s
        self.body = payloads.event_data()
        self.run_id = uuid.uuid4().hex[:8]
        self.published = 0
        self.acked = 0
        self.nacked = 0
        self.pending: set[int] = set()
        self.lowest_pending = 1  # every tag below this one is confirmed
        self.started = 0.0
        self.finished = 0.0
        self.timed_out = False
        self.error: str | None = None
        self.conn: pika.SelectConnection | None = None
        self.channel: Any = None

    def run(self) -> PublishResult:
        self.conn = pika.SelectConnection(
            rabbit.local_only(self.url),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=lambda _conn, _reason: self.conn and self.conn.ioloop.stop(),
        )
        self.conn.ioloop.call_later(self.deadline_s, self._on_deadline)
        self.conn.ioloop.start()
        if self.error:
            raise RuntimeError(self.error)
        return PublishResult(
            messages=self.published,
            acked=self.acked,
            nacked=self.nacked,
            seconds=(self.finished or time.perf_counter()) - self.started,
            window=self.window,
            queued=None,
            timed_out=self.timed_out,
        )

    def _on_open_error(self, _conn: Any, err: Any) -> None:
        self.error = f"cannot connect to RabbitMQ: {err}"
        assert self.conn is not None
        self.conn.ioloop.stop()

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self.started = time.perf_counter()
        self._fill()

    def _fill(self) -> None:
        """Publish until the window is full or every message has gone out."""
        while self.published < self.total and len(self.pending) < self.window:
            self.published += 1
            event_id = f"{self.run_id}-{self.published}"
            props = pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/json",
                message_id=event_id,
                headers=payloads.amqp_headers(event_id),
            )
            self.channel.basic_publish(self.exchange, payloads.EVENT_TYPE, self.body, props)
            self.pending.add(self.published)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            confirmed = [t for t in range(self.lowest_pending, tag + 1) if t in self.pending]
            self.pending.difference_update(confirmed)
            self.lowest_pending = tag + 1
        else:
            confirmed = [tag] if tag in self.pending else []
            self.pending.discard(tag)
        if isinstance(method, pika.spec.Basic.Ack):
            self.acked += len(confirmed)
        else:
            self.nacked += len(confirmed)
        if self.published >= self.total and not self.pending:
            self.finished = time.perf_counter()
            self._stop()
            return
        self._fill()

    def _on_deadline(self) -> None:
        if not self.finished:
            self.timed_out = True
            self.finished = time.perf_counter()
            self._stop()

    def _stop(self) -> None:
        assert self.conn is not None
        if self.conn.is_open:
            self.conn.close()
        else:
            self.conn.ioloop.stop()


def measure_publisher(url: str, messages: int, window: int, deadline_s: float) -> PublishResult:
    """Ceiling B in this process: fresh namespace, publish, count the queue, delete everything."""
    namespace = f"benchceil{uuid.uuid4().hex[:8]}"
    try:
        rabbit.declare_topology(url, namespace, {"sink": ["com.bench.#", "com.github.#"]})
        result = ConfirmPublisher(url, f"{namespace}.events", messages, window, deadline_s).run()
        queued = rabbit.queue_depths(url, [f"{namespace}.sub.sink"])[f"{namespace}.sub.sink"]
    finally:
        rabbit.delete_namespace(url, namespace)
    return PublishResult(**{**asdict(result), "queued": queued})


def run_publisher_process(url: str, messages: int, window: int, deadline_s: float) -> PublishResult:
    """Ceiling B in its own process, so it has a whole interpreter (and GIL) to itself."""
    argv = [
        sys.executable,
        "-m",
        "bench.ceilings",
        "publisher",
        "--json",
        f"--broker={url}",
        f"--messages={messages}",
        f"--window={window}",
        f"--deadline={deadline_s}",
    ]
    proc = subprocess.run(
        argv, cwd=procs.ROOT, capture_output=True, text=True, timeout=deadline_s + 60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ceiling B publisher failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    return PublishResult(**raw)


def webhook_env(run_id: str | None = None) -> dict[str, str]:
    """The environment webhook.lua reads: body, its signature and a fresh id prefix."""
    body = payloads.webhook_body()
    return {
        "BENCH_BODY": body.decode(),
        "BENCH_SIGNATURE": payloads.github_signature(body),
        "BENCH_RUN_ID": run_id or uuid.uuid4().hex[:12],
        "BENCH_PATH": "/webhooks/github",
    }


def measure_bare_asgi(settings: wrk.WrkSettings, log_dir: Path, warmup_s: float = 1.0) -> wrk.WrkResult:
    """Ceiling A: the bare ASGI app under the wrk command and script the hub's run uses."""
    server = procs.bare_asgi_server(log_dir)
    with procs.running(server, procs.clean_env(), "/readyz", timeout=30):
        url = server.base_url + "/webhooks/github"
        if warmup_s > 0:
            warm = wrk.WrkSettings(settings.threads, settings.connections, warmup_s, settings.timeout)
            wrk.run_wrk(url, "webhook.lua", warm, webhook_env())
        return wrk.run_wrk(url, "webhook.lua", settings, webhook_env())


@dataclass(frozen=True, slots=True)
class ReferenceResult:
    """Ceiling D's or peer P's run: the measured wrk run, and its queue afterwards against its 202s."""

    result: wrk.WrkResult
    accepted: int  # 202s over the warm-up and the measured run: messages the queue must hold
    unanswered: int  # requests cut off at a run's end: they may have been published as well
    queued: int | None  # the queue's depth after the server stopped; None if it was not counted
    namespace: str

    @property
    def no_loss(self) -> bool:
        """The queue holds every 202, and no more than the cut-off requests besides."""
        return self.queued is not None and self.accepted <= self.queued <= self.accepted + self.unanswered

    def describe_queue(self) -> str:
        held = "?" if self.queued is None else f"{self.queued:,}"
        return f"queue holds {held} of {self.accepted:,} answered 202 (+{self.unanswered:,} cut off)"

    def summary(self) -> dict[str, Any]:
        """The JSON summary's entry: wrk's fields, the rate, and the no-loss count."""
        extra = {k: getattr(self, k) for k in ("accepted", "unanswered", "queued", "namespace")}
        return asdict(self.result) | {"rate": self.result.accepted_rate, "no_loss": self.no_loss} | extra


# kind -> (letter, its server): both read BENCH_AMQP_URL and BENCH_EXCHANGE, the peer BENCH_SECRET.
REFERENCES: dict[str, tuple[str, Callable[[Path], procs.Server]]] = {
    "durable": ("D", procs.durable_asgi_server),
    "peer": ("P", procs.peer_server),
}


def measure_reference(
    kind: str, url: str, settings: wrk.WrkSettings, log_dir: Path, warmup_s: float = 1.0
) -> ReferenceResult:
    """Ceiling D or peer P: own namespace (exchange + quorum queue), a warm-up and the measured wrk
    run with the hub's script, then the server stopped, its queue counted and the namespace deleted."""
    letter, make_server = REFERENCES[kind]
    namespace = f"bench{kind}{uuid.uuid4().hex[:8]}"
    sink = f"{namespace}.sub.sink"
    env = procs.clean_env(
        {"BENCH_AMQP_URL": url, "BENCH_EXCHANGE": f"{namespace}.events", "BENCH_SECRET": payloads.SECRET}
    )
    server = make_server(log_dir)
    accepted = unanswered = 0
    try:
        rabbit.declare_topology(url, namespace, {"sink": ["com.github.#"]})
        with procs.running(server, env, "/readyz", timeout=30):
            target = server.base_url + "/webhooks/github"
            runs = [settings]
            if warmup_s > 0:
                runs.insert(
                    0, wrk.WrkSettings(settings.threads, settings.connections, warmup_s, settings.timeout)
                )
            for cfg in runs:
                result = wrk.run_wrk(target, "webhook.lua", cfg, webhook_env())
                accepted += result.n202
                unanswered += result.unanswered
            time.sleep(0.5)  # requests cut off at wrk's deadline finish before the server stops
        queued = rabbit.queue_depths(url, [sink])[sink]
    except Exception as exc:
        raise RuntimeError(f"{letter} ({server.name}): {exc}") from exc
    finally:
        rabbit.delete_namespace(url, namespace)
    return ReferenceResult(result, accepted, unanswered, queued, namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "which", nargs="?", choices=["all", "asgi", "durable", "peer", "publisher"], default="all"
    )
    parser.add_argument("--broker", default=rabbit.DEFAULT_URL)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=2_000, help="unconfirmed messages in flight")
    parser.add_argument("--deadline", type=float, default=60.0, help="stop publishing after this many s")
    parser.add_argument("--duration", type=float, default=10.0, help="wrk duration for A, D and P")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections for A, D and P")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by bench.ingest)")
    args = parser.parse_args(argv)

    if args.which == "publisher" and args.json:
        result = measure_publisher(args.broker, args.messages, args.window, args.deadline)
        print(json.dumps(asdict(result)))
        return 0
    settings = wrk.WrkSettings(connections=args.connections, duration=args.duration)
    if args.which in ("all", "asgi"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="hookhub-bench-") as tmp:
            a = measure_bare_asgi(settings, Path(tmp))
        print(f"ceiling A bare ASGI: {a.rate:,.0f} req/s  p50 {a.p50_ms:.2f} ms  p99 {a.p99_ms:.2f} ms")
    for kind, (letter, _) in REFERENCES.items():
        if args.which in ("all", kind):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="hookhub-bench-") as tmp:
                r = measure_reference(kind, args.broker, settings, Path(tmp))
            res = r.result
            print(
                f"{'ceiling ' if kind == 'durable' else ''}{letter} {kind}: {res.accepted_rate:,.0f} req/s  "
                f"p50 {res.p50_ms:.2f} ms  p99 {res.p99_ms:.2f} ms  {r.describe_queue()}"
                f"{'' if r.no_loss else '  -> LOSS'}"
                + (f"  errors: {res.describe_errors()}" if res.errors else "")
            )
    if args.which in ("all", "publisher"):
        b = run_publisher_process(args.broker, args.messages, args.window, args.deadline)
        print(
            f"ceiling B bare pika publisher: {b.rate:,.0f} msg/s ({b.acked:,} confirmed in {b.seconds:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
