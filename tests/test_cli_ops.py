"""The operator CLI as a client of the admin API: subscriptions, pause/resume, where it connects
with which token, and how it fails (one red line, exit 1, or 2 for a usage error)."""

from __future__ import annotations

import json

import pytest

from tests.test_cli_ops_fake import (
    ADMIN_TOKEN,
    FakeHub,
    free_port,
    fresh_hub,
    invoke,
    ok,
    one_error_line,
    sub,
)


@pytest.fixture
def fake_hub() -> FakeHub:
    return fresh_hub()


def test_subscriptions_lists_a_table_with_state_depth_types_and_url(fake_hub: FakeHub) -> None:
    subs = [
        sub("billing", origin="file", depth=42, types=["com.stripe.invoice.*", "com.stripe.charge.#"]),
        sub("crm", mode="pull", url=None, state="paused", state_reason="maintenance"),
    ]
    fake_hub.on("GET", "/admin/subscriptions", body={"subscriptions": subs})
    out = ok(invoke(fake_hub, "subscriptions")).stdout
    seen = fake_hub.only()
    assert (seen.method, seen.path, seen.authorization) == (
        "GET",
        "/admin/subscriptions",
        f"Bearer {ADMIN_TOKEN}",
    )
    billing = next(line for line in out.splitlines() if "billing" in line)
    for text in (
        "file",
        "push",
        "active",
        "42",
        "com.stripe.invoice.*, com.stripe.charge.#",
        "https://billing.example.com/hooks",
    ):
        assert text in billing, (text, billing)
    crm = next(line for line in out.splitlines() if "crm" in line)
    assert "pull" in crm and "paused (maintenance)" in crm
    assert "origin" in out and "depth" in out  # the header


def test_subscriptions_json_is_the_api_answer(fake_hub: FakeHub) -> None:
    answer = {"subscriptions": [sub("billing", depth=3)]}
    fake_hub.on("GET", "/admin/subscriptions", body=answer)
    assert json.loads(ok(invoke(fake_hub, "subscriptions", "--json")).stdout) == answer
    assert json.loads(ok(invoke(fake_hub, "subscriptions", "list", "--json")).stdout) == answer


def test_url_option_wins_over_hookhub_url(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/subscriptions", body={"subscriptions": []})
    dead = f"http://127.0.0.1:{free_port()}"
    result = invoke(None, "subscriptions", "--url", fake_hub.url, env={"HOOKHUB_URL": dead})
    ok(result)
    assert len(fake_hub.requests) == 1
    assert "no subscriptions" in result.stderr
    # and HOOKHUB_URL alone is where it goes
    line = one_error_line(invoke(None, "subscriptions", env={"HOOKHUB_URL": dead}))
    assert f"cannot reach the hub at {dead}" in line


def test_default_url_is_localhost_8080(fake_hub: FakeHub) -> None:
    line = one_error_line(invoke(None, "status", env={"HOOKHUB_URL": None}))
    assert "http://127.0.0.1:8080" in line


def test_create_posts_the_fields_given_and_prints_the_secret_once(fake_hub: FakeHub) -> None:
    created = {**sub("orders"), "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"}
    fake_hub.on("POST", "/admin/subscriptions", 201, created)
    result = invoke(
        None,
        "subscriptions",
        "create",
        "orders",
        "--url",
        "https://orders.example.com/in",
        "--type",
        "com.shop.order.*",
        "-t",
        "com.shop.refund.#",
        "--max-attempts",
        "3",
        "--timeout",
        "5s",
        "--rate-limit",
        "2.5",
        "--hub-url",
        fake_hub.url,
        "--admin-token",
        ADMIN_TOKEN,
        env={"HOOKHUB_URL": None, "HOOKHUB_ADMIN_TOKEN": None},
    )
    ok(result)
    assert fake_hub.only().body == {
        "name": "orders",
        "url": "https://orders.example.com/in",
        "types": ["com.shop.order.*", "com.shop.refund.#"],
        "max_attempts": 3,
        "timeout": "5s",
        "rate_limit": 2.5,
        "mode": "push",
    }
    assert result.stdout.count("whsec_c2VjcmV0c2VjcmV0c2VjcmV0") == 1
    assert "shown only now" in result.stderr


def test_create_pull_sends_the_consumer_token(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/subscriptions", 201, {**sub("crm", mode="pull", url=None), "secret": None})
    args = (
        "subscriptions",
        "create",
        "crm",
        "--mode",
        "pull",
        "--token",
        "consumer-tok",
        "-t",
        "a.b",
        "--visibility-timeout",
        "1m",
    )
    result = ok(invoke(fake_hub, *args))
    body = fake_hub.only().body
    assert body["mode"] == "pull" and body["token"] == "consumer-tok" and body["visibility_timeout"] == "1m"
    assert fake_hub.only().authorization == f"Bearer {ADMIN_TOKEN}"  # the admin token still from the env
    assert "whsec_" not in result.stdout


def test_create_conflict_and_usage_errors(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/subscriptions", 409, {"error": "subscription 'orders' exists (hookhub.yaml)"})
    line = one_error_line(
        invoke(fake_hub, "subscriptions", "create", "orders", "--url", "https://x.io", "-t", "a")
    )
    assert "subscription 'orders' exists (hookhub.yaml)" in line
    fake_hub.requests.clear()
    one_error_line(invoke(fake_hub, "subscriptions", "create", "orders", "--url", "https://x.io"), 2)
    one_error_line(invoke(fake_hub, "subscriptions", "create", "o", "-t", "a", "--mode", "poll"), 2)
    assert fake_hub.requests == []


def test_update_patches_only_what_is_given(fake_hub: FakeHub) -> None:
    fake_hub.on("PATCH", "/admin/subscriptions/orders", body=sub("orders"))
    ok(invoke(fake_hub, "subscriptions", "update", "orders", "--max-in-flight", "4", "-t", "x.y"))
    seen = fake_hub.only()
    assert (seen.method, seen.body) == ("PATCH", {"max_in_flight": 4, "types": ["x.y"]})
    fake_hub.requests.clear()
    one_error_line(invoke(fake_hub, "subscriptions", "update", "orders"), 2)
    assert fake_hub.requests == []


def test_update_of_a_file_subscription_is_refused(fake_hub: FakeHub) -> None:
    fake_hub.on(
        "PATCH", "/admin/subscriptions/billing", 409, {"error": "billing comes from hookhub.yaml: read-only"}
    )
    line = one_error_line(invoke(fake_hub, "subscriptions", "update", "billing", "--url", "https://b.io"))
    assert "read-only" in line


def test_show_prints_every_setting(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/subscriptions/orders", body=sub("orders", rate_limit=5, depth=7))
    out = ok(invoke(fake_hub, "subscriptions", "show", "orders")).stdout
    for text in (
        "https://orders.example.com/hooks",
        "hookhub.sub.orders",
        "5/s",
        "10s",
        "initial 1s",
        "max 3600s",
    ):
        assert text in out, text


def test_show_unknown_is_a_404_message(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/subscriptions/nope", 404, {"error": "no subscription 'nope'"})
    assert "no subscription 'nope'" in one_error_line(invoke(fake_hub, "subscriptions", "show", "nope"))


def test_names_are_escaped_into_one_path_segment(fake_hub: FakeHub) -> None:
    one_error_line(invoke(fake_hub, "subscriptions", "show", "../broker"))
    assert fake_hub.only().raw_path == "/admin/subscriptions/..%2Fbroker"


def test_delete_asks_first(fake_hub: FakeHub) -> None:
    fake_hub.on("DELETE", "/admin/subscriptions/orders", 204)
    result = invoke(fake_hub, "subscriptions", "delete", "orders", input="n\n")
    assert result.exit_code == 1 and "not deleted" in result.stderr
    assert fake_hub.requests == []
    ok(invoke(fake_hub, "subscriptions", "delete", "orders", input="y\n"))
    ok(invoke(fake_hub, "subscriptions", "delete", "orders", "--yes"))
    assert [(r.method, r.path) for r in fake_hub.requests] == [("DELETE", "/admin/subscriptions/orders")] * 2


def test_rotate_secret(fake_hub: FakeHub) -> None:
    answer = {"secret": "whsec_bmV3bmV3bmV3bmV3", "previous_expires_at": "2026-12-07T10:00:00Z"}
    fake_hub.on("POST", "/admin/subscriptions/orders/rotate-secret", body=answer)
    result = ok(invoke(fake_hub, "subscriptions", "rotate-secret", "orders", "--overlap", "2h"))
    assert fake_hub.only().body == {"overlap": "2h"}
    assert "whsec_bmV3bmV3bmV3bmV3" in result.stdout
    assert "2026-12-07T10:00:00Z" in result.stderr


def test_pause_and_resume(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/subscriptions/orders/pause", body=sub("orders", state="paused", depth=12))
    fake_hub.on("POST", "/admin/subscriptions/orders/resume", body=sub("orders"))
    assert "12 events waiting" in ok(invoke(fake_hub, "pause", "orders", "--reason", "deploy")).stdout
    assert "state active" in ok(invoke(fake_hub, "resume", "orders")).stdout
    assert [(r.path, r.body) for r in fake_hub.requests] == [
        ("/admin/subscriptions/orders/pause", {"reason": "deploy"}),
        ("/admin/subscriptions/orders/resume", None),
    ]


def test_wrong_token_is_a_401_line(fake_hub: FakeHub) -> None:
    line = one_error_line(invoke(fake_hub, "subscriptions", "--token", "wrong"))
    assert "missing or wrong admin token" in line
    assert fake_hub.only().authorization == "Bearer wrong"


def test_no_token_says_where_to_give_one(fake_hub: FakeHub) -> None:
    line = one_error_line(invoke(fake_hub, "pause", "orders", env={"HOOKHUB_ADMIN_TOKEN": None}))
    assert "HOOKHUB_ADMIN_TOKEN" in line
    assert fake_hub.only().authorization is None


def test_an_error_that_is_not_json_is_shown_as_text(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/broker", 502, "upstream broker unavailable")
    assert "upstream broker unavailable" in one_error_line(invoke(fake_hub, "status"))


def test_an_answer_that_is_not_json_is_an_error(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/broker", 200, "<html>a proxy's login page</html>")
    assert "no JSON object" in one_error_line(invoke(fake_hub, "status"))
