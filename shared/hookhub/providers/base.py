"""What every provider module builds on: the request it sees, its settings, and the registry.

A provider module defines a settings model (its `kind` and secrets), an envelope model (the
fields the mapping needs) and a `Provider` subclass with two small steps:

- `verify(request)` raises `Unauthorized` unless the request is authentic;
- `to_event(request)` validates the envelope and returns the CloudEvent.

`@register` makes the kind known to the config loader and the HTTP layer, so adding a
provider touches only its own module (plus one import line in `providers/__init__.py`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

import pydantic_core
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.events import Event

DEFAULT_TOLERANCE_SECONDS = 300


@dataclass(slots=True)
class InboundRequest:
    """A provider's HTTP request, independent of the web framework that received it.

    `headers` keys are lower-case; `query` holds the query string's first value per name.
    """

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    received_at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class ProviderSettings(BaseModel):
    """Settings every provider accepts; each module subclasses it with `kind: Literal[...]`."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    secrets: list[SecretStr] = Field(default_factory=list)
    tolerance: int | None = DEFAULT_TOLERANCE_SECONDS  # seconds; None disables the timestamp check
    max_body_bytes: int | None = None  # overrides the hub-wide limit for this provider

    secret_fields: ClassVar[str] = "secrets"  # how the "no secret" error names the setting

    def secret_values(self) -> list[SecretStr]:
        """Every configured secret; several mean rotation (any of them may match)."""
        return list(self.secrets)

    @field_validator("secrets")
    @classmethod
    def _no_empty_secret(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        # an unset ${VAR} expanding to "" must not silently become a key
        for index, secret in enumerate(secrets):
            if not secret.get_secret_value().strip():
                raise ValueError(f"secrets[{index}] is empty")
        return secrets

    @model_validator(mode="after")
    def _require_secret(self) -> Self:
        # without one every request would be refused: say so at start-up, not at the first 401
        if not self.secret_values():
            raise ValueError(f"{self.secret_fields} is required: at least one secret to verify requests")
        return self


class TokenSettings(ProviderSettings):
    """Providers whose proof is a static `token` (Hotmart, Kiwify); `secrets` adds more for rotation."""

    secret_fields: ClassVar[str] = "token (or secrets)"

    token: SecretStr | None = None

    def secret_values(self) -> list[SecretStr]:
        return ([self.token] if self.token is not None else []) + list(self.secrets)

    @field_validator("token")
    @classmethod
    def _no_empty_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().strip():
            raise ValueError("token is empty")
        return token


class TypePrefixSettings(ProviderSettings):
    """Providers whose event type is `type_prefix` + "." + a value from the request."""

    type_prefix: Annotated[str, StringConstraints(min_length=1)] | None = None

    def prefix_for(self, name: str) -> str:
        """The configured prefix, else `com.{provider name}` (SPEC default)."""
        return self.type_prefix or f"com.{name}"


class Reply(BaseModel):
    """A special answer a provider requires instead of the usual 202 (Slack's challenge)."""

    status: int = 200
    body: Any
    media_type: str = "application/json"


S = TypeVar("S", bound=ProviderSettings)


class Provider(Generic[S]):
    """One configured provider instance: `name` is its URL segment, `settings` its config."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[ProviderSettings]]

    def __init__(self, name: str, settings: S) -> None:
        self.name = name
        self.settings = settings
        self.source = f"/providers/{name}"
        self._secrets = [s.get_secret_value().encode("utf-8") for s in settings.secret_values()]

    def verify(self, request: InboundRequest) -> None:
        """Raise `Unauthorized` unless the request carries a valid signature or token."""
        raise NotImplementedError

    def to_event(self, request: InboundRequest) -> Event:
        """Validate the envelope and build the CloudEvent (body kept byte for byte)."""
        raise NotImplementedError

    def special_reply(self, request: InboundRequest) -> Reply | None:
        """A verified request the provider expects a bespoke answer to, instead of ingest."""
        return None

    # Helpers shared by the provider modules -------------------------------------------------

    def event(self, request: InboundRequest, id: str, type: str) -> Event:
        """The CloudEvent for this provider: SPEC source, correlation id and content type.

        `Event` validates every attribute, so a hostile id, type or header is a 422 here.
        """
        return Event(
            id=id,
            source=self.source,
            type=type,
            data=request.body,
            datacontenttype=request.content_type or "application/json",
            correlationid=request.header("x-correlation-id") or id,
        )


ProviderClass = type[Provider[Any]]
_REGISTRY: dict[str, ProviderClass] = {}


def register(cls: ProviderClass) -> ProviderClass:
    """Class decorator: make a provider kind known to the config loader and the router."""
    if cls.kind in _REGISTRY:
        raise RuntimeError(f"provider kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def provider_class(kind: str) -> ProviderClass:
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown provider kind {kind!r} (known: {known})") from None


def known_kinds() -> list[str]:
    return sorted(_REGISTRY)


# Verification building blocks --------------------------------------------------------------


def hmac_digest(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def any_equal(candidates: list[bytes], expected: list[bytes]) -> bool:
    """Constant-time check that any candidate equals any expected value (secret rotation)."""
    matched = False
    for candidate in candidates:
        for value in expected:
            # no early exit: every pair is compared, so timing does not reveal which matched
            matched |= hmac.compare_digest(candidate, value)
    return matched


def check_timestamp(
    raw: str | None, tolerance: int | None, now: float, *, allow_future: bool = False, name: str = "timestamp"
) -> int:
    """Parse a unix-seconds timestamp and enforce the tolerance window; returns the timestamp."""
    if raw is None or raw == "":
        raise Unauthorized(f"missing {name}")
    try:
        ts = int(raw)
    except ValueError:
        raise Unauthorized(f"invalid {name}") from None
    if tolerance is not None:
        if now - ts > tolerance:
            raise Unauthorized(f"{name} too old (tolerance {tolerance}s)")
        if not allow_future and ts - now > tolerance:
            raise Unauthorized(f"{name} too far in the future (tolerance {tolerance}s)")
    return ts


def expected_digests(
    keys: list[bytes], message: bytes, algorithm: str = "sha256", encoding: str = "hex"
) -> list[bytes]:
    """The signature each key would give `message`, encoded as providers send it (hex or base64)."""
    digests = [hmac_digest(key, message, algorithm) for key in keys]
    if encoding == "base64":
        return [base64.b64encode(d) for d in digests]
    return [d.hex().encode("ascii") for d in digests]


def is_form_encoded(request: InboundRequest) -> bool:
    """Whether the body is an HTML form post, which JSON-only mappings refuse with advice."""
    media_type = (request.content_type or "").split(";")[0].strip().lower()
    return media_type == "application/x-www-form-urlencoded"


def require_header(request: InboundRequest, name: str) -> str:
    value = request.header(name)
    if not value:
        raise Unauthorized(f"missing {name} header")
    return value


def load_json(body: bytes) -> Any:
    """The body's JSON value, or a 400: the same parser as the envelope models (UTF-8 only,
    nesting bounded), so a hostile body cannot exhaust the stack as `json.loads` would."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        raise BadRequest("body is not valid JSON") from None


M = TypeVar("M", bound=BaseModel)


def parse_envelope(model: type[M], body: bytes) -> M:
    """Validate the JSON body against an envelope model: 400 if not JSON, 422 naming the field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise envelope_error(exc) from None


def validate_envelope(model: type[M], values: Mapping[str, Any]) -> M:
    """Validate already-extracted values (headers, query) against an envelope model."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise envelope_error(exc) from None


def parse_headers(model: type[M], request: InboundRequest) -> M:
    """Validate headers against a model whose field aliases are header names: 422 names the header."""
    values: dict[str, str] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        value = request.header(alias)
        if value:  # absent and empty are both "missing"
            values[alias] = value
    return validate_envelope(model, values)


def _number_to_str(value: Any) -> Any:
    # providers send ids as JSON integers or strings; a bool is neither
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


EventId = Annotated[str, BeforeValidator(_number_to_str), StringConstraints(min_length=1)]
"""An id field of an envelope: a non-empty string, or a JSON integer taken as its text."""

Name = Annotated[str, StringConstraints(min_length=1)]
"""A non-empty string field of an envelope (event types and the like)."""


def missing_field(field: str, problem: str) -> Unprocessable:
    """The 422 for a required value the models cannot express (e.g. one of two headers)."""
    return Unprocessable(f"invalid envelope: {field}", detail=[{"field": field, "problem": problem}])


def envelope_error(exc: ValidationError) -> BadRequest | Unprocessable:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(e["type"] in ("json_invalid", "json_type") for e in errors):
        return BadRequest("body is not valid JSON")
    fields = [".".join(str(p) for p in e["loc"]) or "body" for e in errors]
    detail = [{"field": f, "problem": e["msg"]} for f, e in zip(fields, errors, strict=True)]
    return Unprocessable(f"invalid envelope: {', '.join(fields)}", detail=detail)


Factory = Callable[[str, ProviderSettings], Provider[Any]]
