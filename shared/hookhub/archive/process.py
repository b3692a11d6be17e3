"""`hookhub archiver`: a process that only archives, for the archiver's Deployment on Knative.

It starts the hub's broker and store (the topology is declared as `hookhub run` declares it, so the
archive queue exists and is bound before any event arrives) and runs the Archiver alone: no
ingest, no dispatch, no resend jobs. The Archiver acks an event only once its batch is written.
It serves /healthz, /readyz and /metrics for the Deployment's probes, and uvicorn's SIGTERM
handling runs the lifespan's shutdown, which writes what was collected before the broker closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from hookhub.config import HubConfig
from hookhub.hub import Hub
from hookhub.web import probe_routes


def create_archiver_app(config: HubConfig) -> Starlette:
    """The archiver with its probes, started and stopped by the ASGI lifespan."""
    hub = Hub(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            await hub.start_archiver()
            yield
        finally:
            await hub.close()

    app = Starlette(routes=probe_routes(hub), lifespan=lifespan)
    app.state.hub = hub
    return app
