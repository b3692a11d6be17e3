"""The admin API's JSON: request and response models, and the one parser of times in requests.

The models carry the limits, enums and formats so the OpenAPI description is precise enough for
clients and schemathesis. Subscription fields mirror `SubscriptionConfig`'s limits; the registry
validates the resulting config again, so it stays the authority on what a subscription may be.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from hookhub.config import check_topic_pattern, parse_duration

# Unix seconds accepted on input: up to the end of year 9999, which RFC 3339 can still write.
MAX_UNIX = 253402300799.0
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
DELIVERY_ID_PATTERN = r"^msg_[a-z2-7]{26}$"  # fanout.sender.delivery_id
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"  # uuid4 hex
MAX_KEY = 255  # event ids, types, sources, correlation ids (the store's key columns)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"


def parse_time(value: Any) -> float:
    """Unix seconds from an RFC 3339 time (with its offset) or a number of unix seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a time needs a UTC offset, e.g. 2024-05-01T12:00:00Z")
        seconds = value.timestamp()
    elif (isinstance(value, int | float) and not isinstance(value, bool)) or (
        isinstance(value, str) and _NUMBER.match(value.strip())
    ):
        seconds = float(value)
    elif isinstance(value, str) and _RFC3339.match(value.strip()):
        text = value.strip().upper().replace(" ", "T").replace("Z", "+00:00")
        if "." in text:  # Python reads at most 6 fraction digits
            head, _, rest = text.partition(".")
            digits = re.match(r"\d+", rest)
            assert digits is not None
            text = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
        try:
            seconds = datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise ValueError(f"not a valid time: {value[:40]!r}") from None
    else:
        raise ValueError("expected an RFC 3339 time such as 2024-05-01T12:00:00Z, or unix seconds")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_UNIX:
        raise ValueError("time out of range: from 1970 to the year 9999")
    return seconds


def to_datetime(value: Any) -> Any:
    """A stored unix time as an aware UTC datetime (serialized as RFC 3339 with `Z`)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


def check_interval(start: float | None, end: float | None, names: tuple[str, str]) -> None:
    """An interval must be non-empty; ValueError (400) names both ends otherwise."""
    if start is not None and end is not None and start >= end:
        raise InvalidInterval(f"`{names[0]}` must be before `{names[1]}`")


class InvalidInterval(ValueError):
    """An inverted or empty time interval: answered 400."""


TimeIn = Annotated[
    float,
    BeforeValidator(parse_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "minimum": 0, "maximum": MAX_UNIX},
            ],
            "description": "RFC 3339 time or unix seconds",
        }
    ),
]
Time = Annotated[datetime, BeforeValidator(to_datetime)]


def _duration(value: Any) -> float:
    seconds = parse_duration(value)
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    return seconds


DAY = 86400.0
MAX_DURATION = 30 * DAY
DurationIn = Annotated[
    float,
    BeforeValidator(_duration),
    Field(ge=0, le=MAX_DURATION),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION_PATTERN, "maxLength": 32},
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
            ],
            "description": "a duration such as 500ms, 10s, 5m, 1h, 1d, or seconds",
        }
    ),
]
TypePattern = Annotated[str, Field(min_length=1, max_length=MAX_KEY), AfterValidator(check_topic_pattern)]
SigningSecret = Annotated[str, Field(pattern=r"^whsec_[A-Za-z0-9+/=]+$", max_length=200)]
Token = Annotated[str, Field(min_length=1, max_length=500)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
DeliveryId = Annotated[str, Field(pattern=DELIVERY_ID_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Subscriptions -------------------------------------------------------------------------------


class BackoffIn(Strict):
    initial: DurationIn | None = None
    max: DurationIn | None = None
    multiplier: float | None = Field(None, ge=1.0, le=100.0)
    jitter: float | None = Field(None, ge=0.0, le=1.0)


class SubscriptionChanges(Strict):
    """What PATCH may change: every field but `name` and `mode`; absent fields stay as they are."""

    url: AnyHttpUrl | None = Field(None, max_length=2048)
    types: list[TypePattern] | None = Field(None, min_length=1, max_length=100)
    secret: SigningSecret | None = None
    token: Token | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)
    backoff: BackoffIn | None = None
    timeout: DurationIn | None = None
    max_in_flight: int | None = Field(None, ge=1, le=10_000)
    rate_limit: float | None = Field(None, gt=0, le=1_000_000)
    visibility_timeout: DurationIn | None = None

    def changes(self) -> dict[str, Any]:
        """The fields given, JSON-ready, as the registry takes them."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


class SubscriptionIn(SubscriptionChanges):
    """A new subscription; a push one without `secret` gets a generated one."""

    name: Name
    mode: Literal["push", "pull"] = "push"
    types: list[TypePattern] = Field(min_length=1, max_length=100)


class BackoffOut(BaseModel):
    initial: float
    max: float
    multiplier: float
    jitter: float


class SubscriptionOut(BaseModel):
    name: str
    origin: Literal["file", "api"]
    mode: Literal["push", "pull"]
    url: str | None
    types: list[str]
    state: Literal["active", "paused", "disabled"]
    state_reason: str
    failing_since: Time | None
    queue: str
    depth: int | None = Field(description="ready messages in its queue; null when the broker cannot say")
    max_attempts: int
    max_in_flight: int
    rate_limit: float | None
    timeout: float
    backoff: BackoffOut
    visibility_timeout: float | None
    secret_rotating_until: Time | None
    created_at: Time | None


class SubscriptionCreated(SubscriptionOut):
    secret: str | None = Field(description="the signing secret, shown this once; null for pull")


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]


class RotateIn(Strict):
    secret: SigningSecret | None = None
    overlap: DurationIn = Field(DAY, description="how long the previous secret keeps signing")


class RotateOut(BaseModel):
    secret: str
    previous_expires_at: Time | None


class PauseIn(Strict):
    reason: str | None = Field(None, max_length=500)


# Dead letters --------------------------------------------------------------------------------


def encode_cursor(dead_at: float, delivery_id: str) -> str:
    return base64.urlsafe_b64encode(f"{dead_at!r} {delivery_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The keyset position a `next_cursor` stands for; ValueError when it is not one."""
    try:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", cursor):
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        dead_at, delivery_id = raw.split(" ")
        position = (float(dead_at), delivery_id)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor: pass `next_cursor` from a previous page as is") from None
    if not math.isfinite(position[0]) or not re.match(DELIVERY_ID_PATTERN, delivery_id):
        raise ValueError("invalid cursor: pass `next_cursor` from a previous page as is")
    return position


class DeadLetterOut(BaseModel):
    delivery_id: str
    subscription: str
    source: str
    event_id: str
    type: str
    correlation_id: str
    attempts: int
    last_status: int | None
    last_error: str | None
    dead_at: Time


class AttemptOut(BaseModel):
    delivery_id: str
    subscription: str
    attempt: int
    attempted_at: Time
    status_code: int | None
    latency_ms: float
    error: str | None
    verdict: Literal["delivered", "retry", "dead", "parked", "pulled"]  # pulled: handed to a pull consumer
    next_attempt_at: Time | None


class EventOut(BaseModel):
    attributes: dict[str, str]
    data_base64: str


class DeadLetterDetail(DeadLetterOut):
    replayed_at: Time | None
    event: EventOut
    attempt_log: list[AttemptOut]


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterOut]
    next_cursor: str | None


class DeadLetterSelector(Strict):
    """Which dead letters to replay or purge: some by id, or a subscription's (narrowed by
    type and time); one of `delivery_ids` and `subscription` is required."""

    delivery_ids: list[DeliveryId] | None = Field(None, min_length=1, max_length=1000)
    subscription: Name | None = None
    type: str | None = Field(None, min_length=1, max_length=MAX_KEY)
    since: TimeIn | None = None
    until: TimeIn | None = None

    @model_validator(mode="after")
    def _selects_something(self) -> DeadLetterSelector:
        if self.delivery_ids is None and self.subscription is None:
            raise ValueError("give `delivery_ids` or `subscription`")
        return self


class Replayed(BaseModel):
    replayed: int


class Purged(BaseModel):
    purged: int


# Replay jobs ---------------------------------------------------------------------------------


class ReplayIn(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    subscription: Name
    start: TimeIn = Field(alias="from")
    end: TimeIn = Field(alias="to")
    dry_run: bool = False


class JobOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    subscription: str
    start: Time = Field(serialization_alias="from")
    end: Time = Field(serialization_alias="to")
    state: Literal["queued", "running", "done", "cancelled", "failed"]
    scanned: int
    sent: int
    error: str | None
    created_at: Time
    updated_at: Time
    finished_at: Time | None


class JobList(BaseModel):
    replays: list[JobOut]


class SampleEvent(BaseModel):
    id: str
    source: str
    type: str
    time: Time | None


class DryRunOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    count: int
    sample: list[SampleEvent] = Field(max_length=10)
    first: Time | None
    last: Time | None
    start: Time = Field(serialization_alias="from")
    end: Time = Field(serialization_alias="to")


# Trace ---------------------------------------------------------------------------------------


class IngestOut(BaseModel):
    source: str
    id: str
    type: str
    origin: str
    correlation_id: str
    received_at: Time
    status: Literal["pending", "accepted"]


class TraceOut(BaseModel):
    ingest: IngestOut
    attempts: list[AttemptOut]


class TraceList(BaseModel):
    events: list[TraceOut]


# Status --------------------------------------------------------------------------------------


class QueueOut(BaseModel):
    name: str
    role: Literal["subscription", "archive", "unrouted", "dead", "other"]
    subscription: str | None
    depth: int
    consumers: int | None
    in_flight: int | None


class BrokerOut(BaseModel):
    broker: Literal["rabbitmq", "sqlite", "memory"]
    queues: list[QueueOut]
    dead_letters: dict[str, int]


class RejectionOut(BaseModel):
    provider: str
    at: Time
    status: int
    reason: str


class RejectionList(BaseModel):
    rejections: list[RejectionOut]


class EventTypeOut(BaseModel):
    provider: str
    type: str
    count: int
    last_seen: Time


class EventTypeList(BaseModel):
    event_types: list[EventTypeOut]


class ErrorBody(BaseModel):
    error: str


Responses = dict[int | str, dict[str, Any]]  # an OpenAPI `responses` argument


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry for an `{"error": ...}` answer."""
    return {"model": ErrorBody, "description": description}
