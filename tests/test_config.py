"""The config file: substitution, overrides, and broken files stopped with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hookhub.cli import app
from hookhub.config import load_config, parse_config, parse_duration
from hookhub.errors import ConfigError

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
