"""`hookhub run --workers N`: N whole hubs (ingest, delivery, archiver) on one listening socket.

One Python process does its work on one core at a time (the GIL), so a machine's other cores add
nothing to a single `hookhub run`. Workers are what Knative replicas are, on one machine: every
one ingests, delivers each subscription (its `max_in_flight` and `rate_limit` shared out, see
`fanout.dispatcher.share_of`) and archives, coordinated only through the broker and the store.
That needs a broker and a store every process can share: RabbitMQ and PostgreSQL. uvicorn's own
supervisor starts, watches and stops the processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette

from hookhub import logs
from hookhub.config import HubConfig, load_config

WORKERS_ENV = "HOOKHUB_RUN_WORKERS"  # how many workers share the socket (for `share_of`)
LOG_ENV = "HOOKHUB_RUN_LOG"  # "<level> <format>" of the parent's --log-level/--log-format


def why_not_shared(config: HubConfig) -> str | None:
    """Why this config cannot run in several processes, or None when it can."""
    if urlsplit(config.broker).scheme.lower() not in ("amqp", "amqps"):
        return "--workers needs a broker every process can share: set `broker: amqp://...` (RabbitMQ)"
    if urlsplit(config.store).scheme.lower() == "sqlite":
        return "--workers needs a store every process can share: set `store: postgresql://...`"
    return None


def hub_app(config: HubConfig, processes: int = 1) -> Starlette:
    """The app `hookhub run` serves in each of its processes."""
    from hookhub.demo import demo_route
    from hookhub.web import create_app

    app = create_app(config, processes=processes)
    if config.demo_receiver:
        app.router.routes.append(demo_route(config))
    return app


def worker_app() -> Starlette:
    """uvicorn's app factory in each worker process (spawned: it reads what the parent set)."""
    _stop_with_parent()
    level, fmt = os.environ.get(LOG_ENV, "info text").split()
    logs.configure(level, fmt)
    return hub_app(load_config(), int(os.environ.get(WORKERS_ENV, "1")))


def _stop_with_parent() -> None:
    """Ask Linux for a SIGTERM (a graceful stop) when the supervisor dies, even of a SIGKILL,
    so no orphaned worker keeps delivering and holding the port; elsewhere this does nothing."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def serve_workers(
    sock: socket.socket, workers: int, config_file: Path, options: dict[str, Any], log: tuple[str, str]
) -> None:
    """Run `workers` processes serving `sock` until SIGTERM or SIGINT, which each worker then
    takes as a graceful stop (its lifespan shutdown)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ["HOOKHUB_CONFIG"] = str(config_file.resolve())
    os.environ[WORKERS_ENV] = str(workers)
    os.environ[LOG_ENV] = " ".join(log)
    config = uvicorn.Config("hookhub.workers:worker_app", factory=True, workers=workers, **options)
    Multiprocess(config, sockets=[sock]).run()
