"""Helpers for the provider tests: build a configured provider, check the CloudEvent it made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hookhub.events import Event
from hookhub.providers import Provider, provider_class

BuildProvider = Callable[..., Provider[Any]]
CheckEvent = Callable[..., None]


@pytest.fixture
def build() -> BuildProvider:
    """`build(kind, name=kind, **settings)`: a provider built the way the config loader does."""

    def _build(kind: str, name: str | None = None, **settings: Any) -> Provider[Any]:
        cls = provider_class(kind)
        return cls(name or kind, cls.settings_model.model_validate({"kind": kind, **settings}))

    return _build


@pytest.fixture
def check_event() -> CheckEvent:
    """Assert the SPEC mapping: id, type, source, byte-identical data, content type, correlation id."""

    def _check(
        event: Event,
        *,
        name: str,
        id: str,
        type: str,
        body: bytes,
        content_type: str = "application/json",
        correlationid: str | None = None,
    ) -> None:
        assert event.id == id
        assert event.type == type
        assert event.source == f"/providers/{name}"
        assert event.data == body
        assert event.datacontenttype == content_type
        assert event.correlationid == (correlationid or id)

    return _check
