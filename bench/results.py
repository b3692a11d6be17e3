"""What every bench prints and keeps: the results table, the JSON summary and the exit status.

bench.ingest, bench.fanout and the others share these so their tables read alike and their
summaries land side by side in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import procs

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One line of the results table."""

    key: str  # one of the bench's row order, also the result's key in the JSON summary
    phase: str
    rate: float | None = None
    unit: str = ""
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ratio: str = ""
    target: str = ""
    verdict: str = ""
    note: str = ""


@dataclass
class Run:
    """Everything one bench run measured, for the table and the JSON summary."""

    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)  # printed under the table

    def problem(self, text: str) -> None:
        """Record an error (non-2xx, loss, a phase that broke) and print it at once, loudly."""
        self.problems.append(text)
        print(f"\n!!! ERROR: {text}\n", flush=True)


def judge(row: Row, ratio: str, target: str, ok: bool) -> None:
    """Fill in how `row` compares with its ceiling and whether it meets its target."""
    row.ratio, row.target, row.verdict = ratio, target, "OK" if ok else "MISS"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def print_table(rows: list[Row], order: tuple[str, ...]) -> None:
    """The rows in `order` (each hub row under its ceiling), numbers right-aligned."""
    header = ("phase", "throughput", "p50 ms", "p95 ms", "p99 ms", "ratio", "target", "", "note")
    table = [header] + [
        (
            r.phase,
            "" if r.rate is None else f"{r.rate:,.0f} {r.unit}",
            _ms(r.p50_ms),
            _ms(r.p95_ms),
            _ms(r.p99_ms),
            r.ratio,
            r.target,
            r.verdict,
            r.note,
        )
        for r in sorted(rows, key=lambda r: order.index(r.key))
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {1, 2, 3, 4}
    print()
    for n, line in enumerate(table):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(flush=True)


def write_summary(run: Run, stamp: str, kind: str, targets: dict[str, float]) -> Path:
    """The run as JSON in bench/results/<kind>-<stamp>.json: options, targets, rows, problems, data."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{stamp}.json"
    summary = {
        "timestamp": stamp,
        "options": vars(run.args),
        "targets": targets,
        "rows": [asdict(r) for r in run.rows],
        "problems": run.problems,
        **run.data,
    }
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


def report(
    run: Run, started: float, interrupted: bool, write: Callable[[], Path], order: tuple[str, ...]
) -> None:
    """Print the table and footer and write the JSON summary (also after an error or Ctrl-C)."""
    if run.rows:
        print_table(run.rows, order)
    for line in run.footer:
        print(line)
    run.data["elapsed_s"] = round(time.monotonic() - started, 1)
    run.data["interrupted"] = interrupted
    path = write()
    print(f"summary: {path.relative_to(procs.ROOT)}  ({run.data['elapsed_s']}s)")


def exit_code(run: Run, interrupted: bool) -> int:
    """130 after Ctrl-C, 1 if anything went wrong (each first line listed), else 0."""
    if interrupted:
        print("interrupted: servers stopped, bench queues, exchanges and store deleted", file=sys.stderr)
        return 130
    if run.problems:
        firsts = [text.splitlines()[0] for text in run.problems]
        print(f"{len(run.problems)} error(s):", *firsts, sep="\n  - ")
        return 1
    return 0


def describe(exc: BaseException) -> str:
    """An exception as one line, also for the ones whose message is empty (pika's)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)


def guarded(run: Run, what: str, step: Callable[[], None]) -> None:
    """Run a check or cleanup step that must neither be skipped nor hide the error in flight."""
    try:
        step()
    except Exception as exc:
        run.problem(f"{what}: {describe(exc)}")


def machine_basics() -> dict[str, Any]:
    """What every bench's numbers depend on, printed first so nobody compares runs from
    different boxes (each bench adds its own software versions)."""
    load1, load5, _ = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_1m_5m": [round(load1, 2), round(load5, 2)],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def check_broker_arg(parser: argparse.ArgumentParser, url: str) -> None:
    """Refuse (as a usage error) a RabbitMQ URL that is not on this machine; 'sqlite' passes."""
    if url == "sqlite":
        return
    from bench import rabbit

    try:
        rabbit.local_only(url)
    except ValueError as exc:
        parser.error(str(exc))
