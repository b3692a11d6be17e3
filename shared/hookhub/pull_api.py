"""The pull subscription endpoints: `POST /subscriptions/{name}/pull` and `/ack`.

A consumer authenticates with its subscription's bearer token. An event comes out as a
CloudEvents structured-mode JSON object (every attribute, and `data` when the content type is
JSON and the body parses, else `data_base64`) plus its `receipt` and `attempt`.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookhub.broker.base import BrokerUnavailable
from hookhub.config import SubscriptionConfig, parse_duration
from hookhub.errors import BadRequest, NotFound, Rejection, Unauthorized, Unavailable, Unprocessable
from hookhub.pull import MAX_PULL, Pulled, Puller
from hookhub.store.base import StoreUnavailable

MAX_BODY_BYTES = 256 * 1024  # 1000 receipt ids fit several times over
MAX_WAIT = 30.0
RECEIPT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # what `new_receipt` makes, within the store's column

Target = tuple[SubscriptionConfig, str]  # the subscription's config and its queue
M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("hookhub.http")


class PullHub(Protocol):
    """What the endpoints need of the hub."""

    pull: Puller

    def pull_target(self, name: str) -> Target | None:
        """A pull subscription's config and queue; None when there is no such pull subscription."""
        ...


def _duration(value: Any) -> float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError("expected a duration such as 20s or 500ms")


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: int = Field(100, ge=1, le=MAX_PULL, strict=True)
    # seconds to wait for the first event; 0 (the default) answers at once
    wait: Annotated[float, BeforeValidator(_duration), Field(ge=0, le=MAX_WAIT)] = 0.0


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, StringConstraints(strict=True, pattern=RECEIPT_PATTERN)]] = Field(
        min_length=1, max_length=MAX_PULL
    )


def parse_body(model: type[M], body: bytes) -> M:
    """The request body as `model`; `BadRequest` (400) for anything that is not a JSON object,
    `Unprocessable` (422) naming the first field at fault."""
    try:
        parsed = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, NaN, or nesting too deep
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise Unprocessable(f"{where}: {error['msg']}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def render(pulled: Pulled) -> dict[str, Any]:
    """One pulled event as the consumer gets it."""
    event = pulled.event
    out: dict[str, Any] = dict(event.attributes())
    out["receipt"] = pulled.receipt
    out["attempt"] = pulled.attempt
    data = _json_data(event.datacontenttype, event.data)
    if data is not _NOT_JSON:
        out["data"] = data
    else:
        out["data_base64"] = base64.b64encode(event.data).decode("ascii")
    return out


_NOT_JSON = object()


def _json_data(content_type: str | None, data: bytes) -> Any:
    mime = (content_type or "").split(";")[0].strip().lower()
    if not (mime in ("application/json", "text/json") or mime.endswith("+json")):
        return _NOT_JSON
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(), status, headers, media_type="application/json"
    )


def pull_routes(get_hub: Callable[[], PullHub]) -> list[Route]:
    """The two routes, for the hub's app; `get_hub` gives the running hub."""

    async def pull(request: Request) -> Response:
        return await _handle(request, get_hub(), _pull)

    async def ack(request: Request) -> Response:
        return await _handle(request, get_hub(), _ack)

    return [
        Route("/subscriptions/{name}/pull", pull, methods=["POST"]),
        Route("/subscriptions/{name}/ack", ack, methods=["POST"]),
    ]


Action = Callable[[PullHub, str, Target, bytes], Awaitable[dict[str, Any]]]


async def _pull(hub: PullHub, name: str, target: Target, body: bytes) -> dict[str, Any]:
    asked = parse_body(PullBody, body) if body.strip() else PullBody()
    config, queue = target
    pulled = await hub.pull.pull(name, config, queue, asked.max, asked.wait)
    return {"events": [render(p) for p in pulled]}


async def _ack(hub: PullHub, name: str, target: Target, body: bytes) -> dict[str, Any]:
    asked = parse_body(AckBody, body)
    return {"acked": await hub.pull.ack(name, asked.ids)}


async def _handle(request: Request, hub: PullHub, action: Action) -> Response:
    try:
        name = request.path_params["name"]
        target = hub.pull_target(name)
        if target is None:
            raise NotFound(f"no pull subscription named {name!r}"[:300])
        _authenticate(request.headers.get("authorization"), target[0])
        body = await _read_body(request)
        return _json(await action(hub, name, target, body))
    except Rejection as exc:
        headers = dict(exc.headers)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        return _json(exc.body(), exc.status, headers)
    except (BrokerUnavailable, StoreUnavailable) as exc:
        which = "broker" if isinstance(exc, BrokerUnavailable) else "store"
        log.warning("pull API: %s unavailable: %s", which, exc)
        unavailable = Unavailable(f"{which} unavailable; retry")
        return _json(unavailable.body(), unavailable.status, unavailable.headers)


def _authenticate(authorization: str | None, config: SubscriptionConfig) -> None:
    """The subscription's own bearer token, compared in constant time."""
    if not authorization or not authorization[:7].lower() == "bearer ":
        raise Unauthorized("missing bearer token")
    token = config.token.get_secret_value() if config.token is not None else None
    presented = authorization[7:].strip().encode()
    if token is None or not hmac.compare_digest(presented, token.encode()):
        raise Unauthorized("invalid token")


async def _read_body(request: Request) -> bytes:
    # imported here: the web module imports this one to mount the routes
    from hookhub.web import read_body

    return await read_body(request, MAX_BODY_BYTES)
