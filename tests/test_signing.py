"""Outbound Standard Webhooks signatures: the published vector and the official library agree."""

from __future__ import annotations

import base64
import os
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookhub.signing import sign, sign_with_key, signing_key

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_published_vector() -> None:
    signature = sign(VECTOR_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    "body",
    [b'{"test": 2432232314}', '{"name": "José", "emoji": "🎉"}'.encode(), b"", b"not json at all"],
)
def test_the_official_library_verifies_it(body: bytes) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    timestamp = int(time.time())
    headers = {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "msg_abc", timestamp, body),
    }
    Webhook(secret).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers, json_parse=False)


def test_unpadded_and_prefixless_secrets_give_the_same_key() -> None:
    key = os.urandom(20)  # 20 bytes: base64 needs one padding character
    padded = base64.b64encode(key).decode()
    assert padded.endswith("=")
    assert signing_key("whsec_" + padded.rstrip("=")) == key
    assert signing_key(padded) == key
    assert sign_with_key(key, "m", 1, b"x") == sign("whsec_" + padded, "m", 1, b"x")


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not*base64!", "whsec_@@@@"])
def test_a_bad_secret_is_a_value_error_that_does_not_echo_it(secret: str) -> None:
    with pytest.raises(ValueError) as info:
        signing_key(secret)
    assert secret.removeprefix("whsec_") not in str(info.value) or not secret.removeprefix("whsec_")
