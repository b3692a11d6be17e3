"""The admin API's one dependency: the hub, once the caller has shown the admin token.

Every route takes the hub through `authorized_hub`, so none can forget the check. The token is
compared in constant time over bytes (`hmac.compare_digest` refuses non-ASCII `str`s). Without
`admin_token` in the config the API is off (403): an open admin API would let anyone read
events and change subscriptions.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hookhub.errors import Rejection, Unauthorized

if TYPE_CHECKING:
    from hookhub.hub import Hub

_bearer = HTTPBearer(auto_error=False, description="the hub's `admin_token`")
GetHub = Callable[[], Awaitable["Hub"]]


class AdminDisabled(Rejection):
    status = 403


def _challenge(message: str) -> Unauthorized:
    return Unauthorized(message, headers={"WWW-Authenticate": 'Bearer realm="hookhub admin"'})


def token_matches(given: str, expected: str) -> bool:
    """`given` is a header value, which ASGI servers decode as latin-1: its raw bytes are
    compared with the token's UTF-8 bytes."""
    try:
        raw = given.encode("latin-1")
    except UnicodeEncodeError:  # not from an HTTP header
        return False
    return hmac.compare_digest(raw, expected.encode())


async def authorized_hub(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Hub:
    get_hub: GetHub = request.app.state.get_hub
    hub = await get_hub()
    expected = hub.config.admin_token
    if expected is None or not expected.get_secret_value():
        raise AdminDisabled("the admin API is disabled: set admin_token")
    if credentials is None:
        raise _challenge("missing admin token: send `Authorization: Bearer <admin_token>`")
    if not token_matches(credentials.credentials, expected.get_secret_value()):
        raise _challenge("wrong admin token")
    return hub


if TYPE_CHECKING:
    AdminHub = Annotated[Hub, Depends(authorized_hub)]
else:  # the hub module imports every service; the routes only need the dependency
    AdminHub = Annotated[Any, Depends(authorized_hub)]
