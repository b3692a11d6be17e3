"""Schemathesis against the admin API's own OpenAPI description: for every operation, generated
requests (valid and invalid) never get a 5xx, and every answer has a documented status and
matches its documented schema. A real hub behind a real server, with the admin token."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from hookhub.admin import admin_route, create_admin_app
from hookhub.config import parse_config
from hookhub.hub import Hub
from tests.admin.conftest import AUTH, admin_config
from tests.http.conftest import LiveServer, serve_in_thread


async def _no_hub() -> Any:
    raise AssertionError("the description needs no hub")


SCHEMA = schemathesis.openapi.from_dict(create_admin_app(_no_hub).openapi())
SCHEMA.config.generation.update(max_examples=25)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def live_app(config: dict[str, Any]) -> Starlette:
    """The hub started by the server's lifespan, in the server's loop, with the admin API."""
    hub = Hub(parse_config(config, environ={}))

    async def get_hub() -> Hub:
        return hub

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.close()

    return Starlette(routes=[admin_route(create_admin_app(get_hub))], lifespan=lifespan)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp: Path = tmp_path_factory.mktemp("admin-api")
    config = admin_config(tmp, f"t{uuid.uuid4().hex[:10]}")
    with serve_in_thread(live_app(config), lifespan="on") as live:
        yield live


def test_served_description_is_the_one_tested(server: LiveServer) -> None:
    served = httpx.get(server.url("/admin/openapi.json"))
    assert served.status_code == 200
    assert served.json() == SCHEMA.raw_schema


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_api_conforms(case: schemathesis.Case, server: LiveServer) -> None:
    case.call_and_validate(base_url=server.url(""), headers=AUTH, checks=CHECKS)
