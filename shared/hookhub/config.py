"""`hookhub.yaml`: loaded, `${VAR}`-substituted, overridden from `HOOKHUB_*`, validated by pydantic.

A broken file stops start-up with a `ConfigError` whose message names the key and the problem,
e.g. `hookhub.yaml: providers.acme.header: Field required`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import urlparse

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

import hookhub.providers  # noqa: F401  (registers every built-in provider kind)
from hookhub.errors import ConfigError
from hookhub.providers.base import _REGISTRY, ProviderSettings

DEFAULT_CONFIG_PATH = "hookhub.yaml"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from `250ms`, `10s`, `5m`, `1h`, `1d` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 500ms, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"invalid duration {value!r}: use e.g. 10s, 500ms, 5m or 1h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
_TOPIC_WORD = re.compile(r"^(\*|#|[^.*#\s]+)$")


def check_topic_pattern(pattern: str) -> str:
    """AMQP topic syntax: dot-separated words, each a literal, `*` or `#`."""
    if not pattern or any(not _TOPIC_WORD.match(word) for word in pattern.split(".")):
        raise ValueError(
            f"invalid type pattern {pattern!r}: dot-separated words, `*` for one word, `#` for zero or more"
        )
    return pattern


class Backoff(BaseModel):
    """Exponential backoff between delivery attempts, with full jitter by default."""

    model_config = ConfigDict(extra="forbid")

    initial: Duration = 1.0
    max: Duration = 3600.0
    multiplier: float = Field(2.0, ge=1.0)
    jitter: float = Field(1.0, ge=0.0, le=1.0)  # fraction of each delay that is randomised

    @model_validator(mode="after")
    def _initial_below_max(self) -> Backoff:
        if self.initial > self.max:
            raise ValueError("backoff.initial must not exceed backoff.max")
        return self


class SubscriptionConfig(BaseModel):
    """One subscriber: where events of the matching types go, and how hard to try."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["push", "pull"] = "push"
    url: AnyHttpUrl | None = None
    types: list[Annotated[str, BeforeValidator(check_topic_pattern)]] = Field(min_length=1)
    secret: SecretStr | None = None  # Standard Webhooks signing secret (whsec_...)
    token: SecretStr | None = None  # pull subscriptions: the consumer's bearer token
    max_attempts: int = Field(8, ge=1, le=100)
    backoff: Backoff = Field(default_factory=lambda: Backoff())
    timeout: Duration = 10.0
    max_in_flight: int = Field(16, ge=1, le=10_000)
    rate_limit: float | None = Field(None, gt=0)  # deliveries per second
    visibility_timeout: Duration = 30.0  # pull: an unacknowledged event comes back after this

    @field_validator("secret")
    @classmethod
    def _secret_is_a_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from hookhub.signing import signing_key

            signing_key(value.get_secret_value())  # ValueError (secret-free message) if not whsec_<base64>
        return value

    @model_validator(mode="after")
    def _mode_needs(self) -> SubscriptionConfig:
        if self.mode == "push" and self.url is None:
            raise ValueError("a push subscription needs `url`")
        if self.mode == "pull" and self.token is None:
            raise ValueError("a pull subscription needs `token`")
        return self


class ProducerConfig(BaseModel):
    """An internal system allowed to POST CloudEvents to /events."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr


def _provider_union() -> Any:
    """A union of every registered provider's settings model, told apart by `kind`."""
    models = tuple(cls.settings_model for cls in _REGISTRY.values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007  (built at run time)


if TYPE_CHECKING:
    ProviderSpec = ProviderSettings
else:
    ProviderSpec = _provider_union()


class HubConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    broker: str = "sqlite:///./var/hookhub.db"
    store: str = "sqlite:///./var/hookhub.db"
    archive: str = "file://./var/archive"
    namespace: str = Field("hookhub", pattern=r"^[A-Za-z0-9_-]+$")
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    publish_timeout: Duration = 5.0
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    producers: dict[str, ProducerConfig] = Field(default_factory=dict)
    subscriptions: dict[str, SubscriptionConfig] = Field(default_factory=dict)

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return _check_url(value, ("sqlite", "amqp", "amqps"))

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        return _check_url(value, ("sqlite", "postgresql", "postgres", "postgresql+psycopg"))

    @field_validator("archive")
    @classmethod
    def _archive_url(cls, value: str) -> str:
        return _check_url(value, ("file", "s3"))

    @field_validator("providers", "producers", "subscriptions")
    @classmethod
    def _names_are_url_segments(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"name {name!r} must be letters, digits, '-' or '_'")
        return value

    def provider(self, name: str) -> ProviderSettings | None:
        return self.providers.get(name)


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    scheme = urlparse(value).scheme
    if scheme not in schemes:
        raise ValueError(f"unsupported URL scheme {scheme!r} in {redact_url(value)!r}; use one of {schemes}")
    return value


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


# Loading ------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, environ: dict[str, str], path: str = "") -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string; a missing variable is an error."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or 'value'}: environment variable {name} is not set")

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: substitute_env(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def apply_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """`HOOKHUB_<KEY>` replaces the top-level scalar setting `<key>` (e.g. HOOKHUB_BROKER)."""
    scalar_keys = [
        name
        for name, f in HubConfig.model_fields.items()
        if name not in ("providers", "producers", "subscriptions")
    ]
    for key in scalar_keys:
        env_name = f"HOOKHUB_{key.upper()}"
        if env_name in environ:
            data[key] = environ[env_name]
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        # drop the discriminator tag pydantic inserts after a provider's name (providers.x.<kind>.field)
        if len(loc) >= 3 and loc[0] == "providers" and loc[2] in _REGISTRY:
            del loc[2]
        lines.append(f"{source}: {'.'.join(loc) or '(top level)'}: {error['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config", environ: dict[str, str] | None = None) -> HubConfig:
    """Validate an already-loaded mapping (what the YAML file holds)."""
    env = dict(os.environ if environ is None else environ)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    try:
        data = apply_overrides(substitute_env(data, env), env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return HubConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> HubConfig:
    """Read, substitute, override and validate the config file (`--config`, else HOOKHUB_CONFIG)."""
    env = dict(os.environ if environ is None else environ)
    config_path = Path(path or env.get("HOOKHUB_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: file not found (set --config or HOOKHUB_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{config_path}:{where}: not valid YAML: {problem}") from None
    return parse_config(data, str(config_path), env)
