"""Outbound signatures per Standard Webhooks, so subscribers can verify with any of its libraries.

`webhook-signature: v1,<base64>` is HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
keyed with the base64-decoded part of the `whsec_...` secret. The body is signed as bytes, exactly
as sent: re-encoding it (even JSON whitespace) would break the subscriber's verification.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from functools import lru_cache

SECRET_PREFIX = "whsec_"


@lru_cache(maxsize=1024)
def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (padding optional, as the libraries accept).

    Cached: every delivery of a subscription signs with the same secret. Raises ValueError, with
    a message that never contains the secret, when it is not base64 or is empty.
    """
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing secret is not base64 (expected whsec_<base64>)") from None
    if not key:
        raise ValueError("signing secret is empty after whsec_")
    return key


def sign_with_key(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` for an already decoded key (the delivery hot path)."""
    digest = hmac.digest(key, f"{msg_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one message: `v1,<base64>`."""
    return sign_with_key(signing_key(secret), msg_id, timestamp, body)
