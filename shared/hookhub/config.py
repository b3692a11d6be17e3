"""`hookhub.yaml`: loaded, `${VAR}`-substituted, overridden from `HOOKHUB_*`, validated by pydantic.

A broken file stops start-up with a `ConfigError` whose message names the key (or the line) and
the problem, e.g. `hookhub.yaml: providers.acme.header: Field required`. A key given twice is an
error, not "the last one wins"; URLs in messages go through `redact_url`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import unquote, urlparse

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
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


def check_topic_pattern(pattern: Any) -> str:
    """AMQP topic syntax: dot-separated words, each a literal, `*` or `#`."""
    if not isinstance(pattern, str):
        raise ValueError("a type pattern must be a string, e.g. com.stripe.*")
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
    # failing without a single success for this long disables it, as a 410 does (Svix: 5 days)
    disable_after: Duration = Field(5 * 86400.0, gt=0)

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


class KnativeConfig(BaseModel):
    """The hub on Knative: whether the admin function keeps a RabbitmqSource per runtime push
    subscription through the Kubernetes API (`hookhub.knative_sources`). `namespace` and
    `rabbitmq_cluster` mean what `hookhub render knative`'s options of the same names do."""

    model_config = ConfigDict(extra="forbid")

    sources: bool = False
    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # None: the pod's
    rabbitmq_cluster: str | None = None  # [NAMESPACE/]NAME; None: render's default
    # None: in-cluster (KUBERNETES_SERVICE_HOST/PORT, ServiceAccount token); else e.g. `kubectl proxy`
    api_url: AnyHttpUrl | None = None
    api_timeout: Duration = Field(10.0, gt=0)


class HubConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    broker: str = "sqlite:///./var/hookhub.db"
    store: str = "sqlite:///./var/hookhub.db"
    archive: str = "file://./var/archive"
    archive_retention: Duration = Field(7 * 86400.0, gt=0)  # archived events older than this are deleted
    namespace: str = Field("hookhub", pattern=r"^[A-Za-z0-9_-]+$")
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    publish_timeout: Duration = 5.0
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    producers: dict[str, ProducerConfig] = Field(default_factory=dict)
    subscriptions: dict[str, SubscriptionConfig] = Field(default_factory=dict)
    # `hookhub run` also serves POST /demo/receiver, which logs each delivery it gets (first steps)
    demo_receiver: bool = False
    knative: KnativeConfig = Field(default_factory=lambda: KnativeConfig())

    _development_secrets: list[str] = PrivateAttr(default_factory=list)

    @property
    def development_secrets(self) -> list[str]:
        """Variables whose `${VAR:-default}` development default is in use for a secret."""
        return list(self._development_secrets)

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        value = _check_url(value, ("sqlite", "amqp", "amqps", "memory"))
        if value.startswith("amqp"):
            import pika  # what the RabbitMQ broker parses it with: refuse here what it would refuse

            try:
                pika.URLParameters(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"invalid AMQP URL {redact_url(value)!r}: {str(exc)[:200]}") from None
        return value

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        value = _check_url(value, ("sqlite", "postgresql", "postgres", "postgresql+psycopg"))
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value).port  # noqa: B018  (parsing the port is what raises)
        except (ArgumentError, ValueError):
            raise ValueError(f"invalid database URL {redact_url(value)!r}") from None
        return value

    @field_validator("archive")
    @classmethod
    def _archive_url(cls, value: str) -> str:
        from hookhub.archive import check_archive_url  # the very parser `open_archive` uses

        check_archive_url(value)
        return value

    @field_validator("providers", "producers", "subscriptions")
    @classmethod
    def _names_are_url_segments(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"name {name!r} must be letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _sources_need_rabbitmq(self) -> HubConfig:
        if self.knative.sources and not self.broker.startswith("amqp"):
            raise ValueError(
                "knative.sources: RabbitmqSources consume RabbitMQ queues; the broker must be amqp:// or amqps://"
            )
        return self

    def provider(self, name: str) -> ProviderSettings | None:
        return self.providers.get(name)


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    scheme = urlparse(value).scheme
    if scheme not in schemes:
        raise ValueError(f"unsupported URL scheme {scheme!r} in {redact_url(value)!r}; use one of {schemes}")
    return value


_SENSITIVE_PARAM = re.compile(r"pass|pwd|secret|token|key|signature|credential|auth", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def redact_url(url: str) -> str:
    """The URL with its password and every secret-looking query parameter shown as `***`.

    Works on the string itself (not parse-and-rebuild) so everything else is shown as written;
    `?password=`, `?token=`, `?sslpassword=`, `?X-Amz-Signature=` and the like are secrets too.
    """
    scheme = _SCHEME.match(url)
    if scheme:
        # up to the last "@" before the query: an unencoded "/" in a password still gets hidden
        rest = url[scheme.end() :]
        head = re.split(r"[?#]", rest, maxsplit=1)[0]
        if "@" in head:
            userinfo, after = rest[: head.rindex("@")], rest[head.rindex("@") :]
            if ":" in userinfo:
                url = f"{scheme.group()}{userinfo.split(':', 1)[0]}:***{after}"
    query_at = url.find("?")
    if query_at < 0:
        return url
    fragment_at = url.find("#", query_at)
    end = len(url) if fragment_at < 0 else fragment_at
    params = url[query_at + 1 : end].split("&")
    for i, param in enumerate(params):
        name, equals, _ = param.partition("=")
        if equals and _SENSITIVE_PARAM.search(unquote(name)):
            params[i] = f"{name}=***"
    return f"{url[: query_at + 1]}{'&'.join(params)}{url[end:]}"


# Loading ------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_WORD = re.compile(r"secret|token|passw|hottok|api_?key", re.IGNORECASE)


class _Substitution:
    """One pass of `${VAR}` substitution; remembers which development defaults it used.

    Results are memoised per object, so a YAML alias used many times is substituted once
    (no exponential blow-up) and a recursive alias is refused instead of recursing forever.
    """

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ
        self.defaults_used: list[tuple[str, str]] = []  # (key path, variable name)
        self._done: dict[int, Any] = {}
        self._active: set[int] = set()

    def __call__(self, value: Any, path: str = "") -> Any:
        if isinstance(value, str):
            return _VAR.sub(lambda match: self._replace(match, path), value)
        if not isinstance(value, dict | list):
            return value
        key = id(value)
        if key in self._done:
            return self._done[key]
        if key in self._active:
            raise ConfigError(f"{path or '(top level)'}: a YAML alias refers to itself")
        self._active.add(key)
        if isinstance(value, dict):
            result: Any = {k: self(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        else:
            result = [self(v, f"{path}[{i}]") for i, v in enumerate(value)]
        self._active.discard(key)
        self._done[key] = result
        return result

    def _replace(self, match: re.Match[str], path: str) -> str:
        name, default = match.group(1), match.group(2)
        if name in self.environ:
            return self.environ[name]
        if default is None:
            raise ConfigError(f"{path or 'value'}: environment variable {name} is not set")
        self.defaults_used.append((path, name))
        return default


def apply_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """`HOOKHUB_<KEY>` replaces the top-level scalar setting `<key>` (e.g. HOOKHUB_BROKER), and
    `HOOKHUB_KNATIVE_<KEY>` the setting `knative.<key>` (so one Knative Service can turn it on)."""
    for key in _overridable_keys():
        env_name = f"HOOKHUB_{key.upper()}"
        if env_name in environ:
            data[key] = environ[env_name]
    knative = {
        key: environ[f"HOOKHUB_KNATIVE_{key.upper()}"]
        for key in KnativeConfig.model_fields
        if f"HOOKHUB_KNATIVE_{key.upper()}" in environ
    }
    if knative:
        section = data.get("knative")
        data["knative"] = {**section, **knative} if isinstance(section, dict) else knative
    return data


def _overridable_keys() -> list[str]:
    return [
        name
        for name in HubConfig.model_fields
        if name not in ("providers", "producers", "subscriptions", "knative")
    ]


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        message = error["msg"]
        # drop the discriminator tag pydantic inserts after a provider's name (providers.x.<kind>.field)
        if len(loc) >= 3 and loc[0] == "providers" and loc[2] in _REGISTRY:
            del loc[2]
        if error["type"] == "union_tag_not_found":  # a provider without `kind`
            loc.append("kind")
            message = f"Field required: the provider's kind, one of {', '.join(sorted(_REGISTRY))}"
        elif error["type"] == "union_tag_invalid":
            loc.append("kind")
            tag = str(error.get("ctx", {}).get("tag", ""))[:40]
            message = f"unknown provider kind {tag!r}: use one of {', '.join(sorted(_REGISTRY))}"
        lines.append(f"{source}: {'.'.join(loc) or '(top level)'}: {message}")
    return "\n".join(lines)


def _is_secret(path: str, variable: str) -> bool:
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return bool(_SECRET_WORD.search(last) or _SECRET_WORD.search(variable))


def parse_config(data: Any, source: str = "config", environ: dict[str, str] | None = None) -> HubConfig:
    """Validate an already-loaded mapping (what the YAML file holds)."""
    env = dict(os.environ if environ is None else environ)
    if data is None:
        raise ConfigError(f"{source}: empty: no settings at all (start from hookhub.example.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    substitution = _Substitution(env)
    try:
        data = apply_overrides(substitution(data), env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    try:
        config = HubConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    overridden = {key for key in _overridable_keys() if f"HOOKHUB_{key.upper()}" in env}
    config._development_secrets = sorted(
        {
            variable
            for path, variable in substitution.defaults_used
            if _is_secret(path, variable) and path.split(".", 1)[0] not in overridden
        }
    )
    return config


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last one
    silently otherwise, so a second `stripe:` would replace the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if first is not None:
                raise _DuplicateKey(
                    problem=f"duplicate key {str(key)[:60]!r} (first given on line {first.line + 1})",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """The YAML document as the hub reads it: safe tags only, duplicate keys refused, errors with
    the line. Raises ConfigError."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        what = "" if isinstance(exc, _DuplicateKey) else " not valid YAML:"
        raise ConfigError(f"{source}:{where}{what} {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None


def config_path(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Path:
    """The file to load: `--config`, else HOOKHUB_CONFIG, else ./hookhub.yaml."""
    env = os.environ if environ is None else environ
    return Path(path or env.get("HOOKHUB_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> HubConfig:
    """Read, substitute, override and validate the config file (`--config`, else HOOKHUB_CONFIG)."""
    env = dict(os.environ if environ is None else environ)
    file = config_path(path, env)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found (set --config or HOOKHUB_CONFIG)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return parse_config(load_yaml(text, str(file)), str(file), env)
