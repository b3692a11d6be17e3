"""The config file: substitution, overrides, and broken files stopped with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hookhub.cli import app
from hookhub.config import load_config, parse_config, parse_duration, redact_url
from hookhub.errors import ConfigError
from hookhub.startup import startup_summary, startup_warnings, type_pattern_findings

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hookhub.yaml"
    path.write_text(text)
    return path


def test_example_config_loads_with_development_defaults() -> None:
    config = load_config(ROOT / "hookhub.example.yaml", environ={})
    assert config.broker.startswith("sqlite:///")
    assert config.providers["stripe"].kind == "stripe"
    assert config.providers["shop"].kind == "shopify"
    assert config.subscriptions["crm"].backoff.max == 3600
    assert config.admin_token is not None and config.admin_token.get_secret_value() == "dev-admin-token"


def test_environment_variables_are_substituted_and_secrets_hidden(tmp_path: Path) -> None:
    path = write(tmp_path, 'providers:\n  s: {kind: stripe, secrets: ["${STRIPE_SECRET}"]}\n')
    config = load_config(path, environ={"STRIPE_SECRET": "whsec_real"})
    secret = config.providers["s"].secrets[0]
    assert secret.get_secret_value() == "whsec_real"
    assert "whsec_real" not in repr(config)


def test_missing_environment_variable_names_key_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, 'admin_token: "${NOT_SET_ANYWHERE}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "admin_token" in str(err.value) and "NOT_SET_ANYWHERE" in str(err.value)


def test_hookhub_prefixed_variables_override_top_level_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "broker: sqlite:///x.db\n")
    config = load_config(path, environ={"HOOKHUB_BROKER": "amqp://u:p@h:5672/v", "HOOKHUB_NAMESPACE": "blue"})
    assert config.broker == "amqp://u:p@h:5672/v"
    assert config.namespace == "blue"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "namespace: fromenv\n")
    assert load_config(environ={"HOOKHUB_CONFIG": str(path)}).namespace == "fromenv"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker: ok\nstore: [unclosed\n", "not valid YAML"),
        ("a: b\n  c: d\n", "line 2"),
        ("providers:\n  x: {kind: nosuch}\n", "providers.x"),
        ("providers:\n  x: {kind: stripe, secret: [a]}\n", "providers.x.secret"),
        ("providers:\n  x: {kind: hmac, secrets: [a]}\n", "providers.x.header"),
        ("broker: redis://localhost\n", "broker"),
        ("store: mysql://localhost\n", "store"),
        ("subscriptions:\n  s: {url: 'http://x/h', types: ['a b']}\n", "subscriptions.s.types.0"),
        (
            "subscriptions:\n  s: {url: 'http://x/h', types: ['a.*'], timeout: soon}\n",
            "subscriptions.s.timeout",
        ),
        ("subscriptions:\n  s: {url: 'not a url', types: ['a.*']}\n", "subscriptions.s.url"),
        ("subscriptions:\n  s: {types: ['a.*']}\n", "subscriptions.s"),
        ("subscriptions:\n  s: {url: 'http://x/h', types: []}\n", "subscriptions.s.types"),
        ("brokr: sqlite:///x\n", "brokr"),
        ("- a list\n", "mapping"),
        ("providers:\n  'bad name': {kind: stripe}\n", "providers"),
    ],
)
def test_broken_files_are_rejected_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_passwords_in_urls_are_redacted_in_errors() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"broker": "redis://user:hunter2@h/"}, environ={})
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "seconds"), [("10s", 10), ("500ms", 0.5), ("5m", 300), ("1h", 3600), (3, 3)]
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_cli_check_config_exits_2_and_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  x: {kind: stripe, secrets: 3}\n")
    result = CliRunner().invoke(app, ["check-config", "--config", str(path)])
    assert result.exit_code == 2
    assert "providers.x.secrets" in result.output


def test_cli_check_config_ok() -> None:
    result = CliRunner().invoke(app, ["check-config", "--config", str(ROOT / "hookhub.example.yaml")])
    assert result.exit_code == 0, result.output
    assert "providers" in result.output


def test_subscription_secret_must_be_a_standard_webhooks_key(tmp_path: Path) -> None:
    path = write(
        tmp_path, "subscriptions:\n  s: {url: 'http://x/h', types: ['a.*'], secret: 'whsec_***not-base64'}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "subscriptions.s.secret" in str(err.value) and "not-base64" not in str(err.value)


# Start-up errors: one clear message naming the key and the line -----------------------------


def test_duplicate_keys_are_refused_naming_key_and_line(tmp_path: Path) -> None:
    text = (
        "providers:\n"
        "  stripe: {kind: stripe, secrets: [a]}\n"
        "  github: {kind: github, secrets: [b]}\n"
        "  stripe: {kind: stripe, secrets: [c]}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert "duplicate key 'stripe'" in str(err.value)
    assert "line 4" in str(err.value) and "first given on line 2" in str(err.value)


def test_duplicate_top_level_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate key 'broker'"):
        load_config(write(tmp_path, "broker: sqlite:///a.db\nbroker: sqlite:///b.db\n"), environ={})


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    text = (
        "subscriptions:\n"
        "  a: &base {url: 'http://x/h', types: ['com.stripe.#'], timeout: 5s}\n"
        "  b: {<<: *base, timeout: 7s}\n"
    )
    config = load_config(write(tmp_path, text), environ={})
    assert config.subscriptions["b"].timeout == 7


def test_provider_without_kind_names_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "providers:\n  pay: {secrets: [a]}\n"), environ={})
    assert "providers.pay.kind: Field required" in str(err.value)
    assert "stripe" in str(err.value) and "discriminator" not in str(err.value)


def test_unknown_kind_names_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "providers:\n  pay: {kind: strype, secrets: [a]}\n"), environ={})
    assert "providers.pay.kind: unknown provider kind 'strype'" in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing configured yet\n"])
def test_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        load_config(write(tmp_path, text), environ={})


def test_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "hookhub.yaml"
    path.write_bytes(b"broker: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, environ={})


def test_self_referring_alias_is_an_error_not_a_recursion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(write(tmp_path, "providers: &p {x: *p}\n"), environ={})


# Secrets in URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://h/db?password=hunter2", "postgresql://h/db?password=***"),
        ("amqp://h/?password=hunter2&heartbeat=5", "amqp://h/?password=***&heartbeat=5"),
        ("amqp://guest:hunter2@h:5672/%2F", "amqp://guest:***@h:5672/%2F"),
        ("amqp://guest:hun/ter2@h:5672/v", "amqp://guest:***@h:5672/v"),
        (
            "postgresql://u@h/db?sslmode=require&sslpassword=hunter2",
            "postgresql://u@h/db?sslmode=require&sslpassword=***",
        ),
        ("s3://bucket/p?aws_secret_access_key=hunter2#x", "s3://bucket/p?aws_secret_access_key=***#x"),
        ("http://x/h?access_token=hunter2&api%5Fkey=hunter2", "http://x/h?access_token=***&api%5Fkey=***"),
        ("sqlite:///./var/hookhub.db", "sqlite:///./var/hookhub.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", ["redis://h/?password=hunter2", "mysql://h/db?token=hunter2"])
def test_query_passwords_are_redacted_in_errors(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"store": url}, environ={})
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


# Start-up report ----------------------------------------------------------------------------------


def test_summary_names_file_shape_and_subscriptions_without_secrets() -> None:
    config = parse_config(
        {
            "broker": "amqp://guest:hunter2@h/",
            "store": "postgresql://u@h/db?password=hunter2",
            "providers": {"stripe": {"kind": "stripe", "secrets": ["whsec_x"]}},
            "subscriptions": {"crm": {"url": "http://x/h?token=hunter2", "types": ["com.stripe.#"]}},
        },
        environ={},
    )
    text = "\n".join(startup_summary(config, "my.yaml"))
    assert "my.yaml" in text and "amqp://guest:***@h/" in text and "postgresql://u@h/db?password=***" in text
    assert "subscription crm: push to http://x/h?token=***, types com.stripe.#" in text
    assert "hunter2" not in text


def test_development_secrets_are_named_until_their_variables_are_set() -> None:
    example = ROOT / "hookhub.example.yaml"
    config = load_config(example, environ={})
    assert {"STRIPE_WEBHOOK_SECRET", "CRM_SIGNING_SECRET", "HOOKHUB_ADMIN_TOKEN"} <= set(
        config.development_secrets
    )
    (warning,) = [w for w in startup_warnings(config) if "development secrets" in w]
    assert "STRIPE_WEBHOOK_SECRET" in warning and "dev_stripe" not in warning
    config = load_config(example, environ={"STRIPE_WEBHOOK_SECRET": "whsec_real", "HOOKHUB_ADMIN_TOKEN": "t"})
    assert "STRIPE_WEBHOOK_SECRET" not in config.development_secrets
    assert "HOOKHUB_ADMIN_TOKEN" not in config.development_secrets


def test_non_secret_defaults_are_not_announced(tmp_path: Path) -> None:
    path = write(tmp_path, "namespace: ${NAMESPACE:-hookhub}\n")
    assert load_config(path, environ={}).development_secrets == []


def test_example_config_patterns_all_match_a_provider() -> None:
    config = load_config(ROOT / "hookhub.example.yaml", environ={})
    assert type_pattern_findings(config) == []


PROVIDERS = {
    "stripe": {"kind": "stripe", "secrets": ["s"]},
    "svix": {"kind": "standard", "secrets": ["whsec_AAAA"], "type_prefix": "io.svix"},
    "acme": {"kind": "hmac", "header": "X-Sig", "secrets": ["s"], "id": "/id", "type": "acme.order.paid"},
    "beta": {"kind": "hmac", "header": "X-Sig", "secrets": ["s"], "id": "/id", "type": "/type"},
}


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("com.stripe.*", True),
        ("com.stripe.#", True),
        ("#", True),
        ("*.stripe.invoice.paid", True),
        ("io.svix.#", True),
        ("acme.order.paid", True),
        ("acme.#", True),
        ("acme.order.paid.#", True),
        ("com.beta.*", True),  # hmac: type_prefix defaults to com.<name>
        ("com.stripe", False),  # stripe's types always have a word after the prefix
        ("acme.order.paid.*", False),  # a fixed type has nothing after it
        ("com.svix.*", False),  # svix set its own prefix
        ("com.strpe.*", False),
        ("org.example.#", False),
    ],
)
def test_which_patterns_can_match_a_provider(pattern: str, matches: bool) -> None:
    config = parse_config(
        {"providers": PROVIDERS, "subscriptions": {"s": {"url": "http://x/h", "types": [pattern]}}},
        environ={},
    )
    assert (type_pattern_findings(config) == []) is matches


def test_a_hub_without_admin_token_warns_that_the_admin_api_is_off() -> None:
    subscriptions = {"s": {"url": "http://x/h", "types": ["com.stripe.#"]}}
    config = parse_config({"providers": PROVIDERS, "subscriptions": subscriptions}, environ={})
    (warning,) = startup_warnings(config)
    assert "no admin_token" in warning and "403" in warning
    config = parse_config(
        {"providers": PROVIDERS, "subscriptions": subscriptions, "admin_token": "t"}, environ={}
    )
    assert startup_warnings(config) == []


def test_unmatchable_pattern_warns_naming_known_prefixes() -> None:
    config = parse_config(
        {
            "providers": PROVIDERS,
            "admin_token": "a",
            "subscriptions": {"s": {"url": "http://x/h", "types": ["org.example.#"]}},
        },
        environ={},
    )
    (warning,) = startup_warnings(config)
    assert "subscription s" in warning and "'org.example.#'" in warning
    assert "com.stripe" in warning and "io.svix" in warning and "acme.order.paid" in warning


def test_with_producers_an_unmatched_pattern_is_noted_not_warned_unless_misspelt() -> None:
    settings = {
        "providers": PROVIDERS,
        "producers": {"billing": {"token": "t"}},
        "admin_token": "a",
        "subscriptions": {"s": {"url": "http://x/h", "types": ["org.example.#", "com.strpe.#"]}},
    }
    config = parse_config(settings, environ={})
    (warning,) = startup_warnings(config)
    assert "'com.strpe.#'" in warning and "closest provider prefix: com.stripe" in warning
    summary = "\n".join(startup_summary(config, "x.yaml"))
    assert "'org.example.#'" in summary and "only producers (billing)" in summary


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"broker": "amqp://guest:guest@h/?password=hunter2"}, "broker"),  # pika refuses the parameter
        ({"broker": "amqp://h:99999/"}, "broker"),
        ({"store": "postgresql://u:hunter2@h:port/db"}, "store"),
    ],
)
def test_urls_the_clients_would_refuse_are_config_errors(settings: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(settings, environ={})
    assert f"config: {key}: " in str(err.value) and "hunter2" not in str(err.value)


@pytest.mark.parametrize("url", ["redis://x", "s3://", "s3:///prefix", "file://", "/var/archive", "gs://b/p"])
def test_archive_urls_the_archive_cannot_open_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"archive": url}, environ={})
    assert "config: archive: " in str(err.value) and "s3://BUCKET" in str(err.value)


@pytest.mark.parametrize("url", ["file://./var/archive", "file:///srv/archive", "s3://bucket", "s3://b/p/q"])
def test_archive_urls_the_archive_opens_are_accepted(url: str) -> None:
    assert parse_config({"archive": url}, environ={}).archive == url
