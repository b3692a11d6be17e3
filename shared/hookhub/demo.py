"""A stand-in subscriber for first steps, so the example config delivers somewhere real.

With `demo_receiver: true`, `hookhub run` also serves `POST /demo/receiver`: it checks each
delivery's Standard Webhooks signature against the subscriptions' secrets, logs one line per
delivery and answers 204. Without it a new user's first event would retry into a closed port.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookhub.config import HubConfig
from hookhub.signing import sign

DEMO_PATH = "/demo/receiver"
MAX_BODY_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


def signed_by(config: HubConfig, headers: dict[str, str], body: bytes) -> str:
    """Which subscription's secret signed this delivery: a name, `unsigned` or `invalid`."""
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "").split()
    if not signatures:
        return "unsigned"
    if not timestamp.isdigit():
        return "invalid"
    for name, sub in config.subscriptions.items():
        if sub.secret is None:
            continue
        expected = sign(sub.secret.get_secret_value(), msg_id, int(timestamp), body)
        if any(hmac.compare_digest(expected, given) for given in signatures):
            return f"valid for {name}"
    return "invalid"


def demo_route(config: HubConfig) -> Route:
    async def receive(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return Response(status_code=413)
        headers = dict(request.headers)
        signature = signed_by(config, headers, body)
        log.info(
            "demo receiver got %s %s (attempt %s, signature %s)",
            headers.get("ce-type", "?"),
            headers.get("ce-id", "?"),
            headers.get("hookhub-attempt", "?"),
            signature,
            extra={
                "event_id": headers.get("ce-id"),
                "correlation_id": headers.get("ce-correlationid"),
                "delivery_id": headers.get("webhook-id"),
            },
        )
        return Response(status_code=204)

    return Route(DEMO_PATH, receive, methods=["POST"])


def demo_mismatches(config: HubConfig, port: int) -> list[str]:
    """Warnings for subscriptions that post to a demo receiver this process does not serve:
    the receiver is off, or they name another port than the one `hookhub run` listens on."""
    warnings = []
    for name, sub in config.subscriptions.items():
        url = urlsplit(str(sub.url)) if sub.url is not None else None
        if url is None or url.path != DEMO_PATH:
            continue
        if not config.demo_receiver:
            warnings.append(f"subscription {name} posts to {DEMO_PATH}, but demo_receiver is not enabled")
        elif (url.port or (443 if url.scheme == "https" else 80)) != port:
            warnings.append(
                f"subscription {name} posts to the demo receiver at {url.netloc}, "
                f"but hookhub listens on {port}: its deliveries will retry"
            )
    return warnings
