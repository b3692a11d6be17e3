"""Every way a request can be refused, each carrying the HTTP status the SPEC gives it.

Providers, the producer API and the hub raise these; the HTTP layer turns them into responses.
Messages must never contain secrets.
"""

from __future__ import annotations

from typing import Any


class Rejection(Exception):
    """A request the hub refuses; nothing has been enqueued when one is raised."""

    status: int = 400

    def __init__(self, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class BadRequest(Rejection):
    status = 400


class Unauthorized(Rejection):
    status = 401


class NotFound(Rejection):
    status = 404


class PayloadTooLarge(Rejection):
    status = 413


class Unprocessable(Rejection):
    status = 422


class InvalidEvent(Unprocessable):
    """An event that is not a valid CloudEvent hookhub can carry; names the attribute at fault.

    The message never quotes the value: it may be huge or hostile.
    """

    def __init__(self, attribute: str, problem: str) -> None:
        super().__init__(
            f"invalid event attribute {attribute!r}: {problem}",
            detail={"attribute": attribute, "problem": problem},
        )
        self.attribute = attribute
        self.problem = problem


class Unavailable(Rejection):
    """The broker or store could not make the event durable: the sender should retry."""

    status = 503

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ConfigError(Exception):
    """The configuration file is broken; the message names the key and the problem."""
