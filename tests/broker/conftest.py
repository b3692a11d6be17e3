"""The broker harness: every contract test runs once per broker kind (memory, sqlite, rabbitmq)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hookhub.broker import Topology

from ._support import UNREACHABLE_AMQP, UNREACHABLE_MEMORY, Harness


@pytest.fixture(params=["memory", "sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def harness(request, namespace, tmp_sqlite_url, tmp_path) -> AsyncIterator[Harness]:
    if request.param == "rabbitmq":
        url = request.getfixturevalue("rabbitmq_url")
        h = Harness("rabbitmq", url, Topology(namespace), UNREACHABLE_AMQP)
    elif request.param == "memory":
        h = Harness("memory", "memory://", Topology(namespace), UNREACHABLE_MEMORY)
    else:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the database's directory should be")
        h = Harness("sqlite", tmp_sqlite_url, Topology(namespace), f"sqlite:///{blocker}/hookhub.db")
    try:
        yield h
    finally:
        await h.cleanup()
