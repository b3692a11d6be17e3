"""Every subscription the hub knows: those of `hookhub.yaml` (read-only) and those created at run
time through the admin API (kept in the store), as one snapshot the dispatcher, the Knative
`fanout` function, the pull API and the admin API all read.

The store is the source of truth for runtime subscriptions, so every process (several replicas,
the Knative functions) converges on the same set by refreshing; the process that changes the set
applies the broker bindings before it answers, so events published after a 201 are retained.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import ValidationError

from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.config import SubscriptionConfig
from hookhub.signing import SECRET_PREFIX
from hookhub.store.base import StoreUnavailable, SubscriptionCatalog, SubscriptionStates
from hookhub.store.records import StoredSubscription, SubscriptionState

log = logging.getLogger(__name__)
Follow = Callable[[str, SubscriptionConfig | None, SubscriptionConfig | None], Awaitable[None]]

NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
IMMUTABLE = ("mode",)  # a push subscription cannot become a pull one: delete and create instead


class UnknownSubscription(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no subscription named {self.name!r}"


class ReadOnly(Exception):
    """A subscription from `hookhub.yaml`: change the file instead."""

    def __init__(self, name: str) -> None:
        super().__init__(f"subscription {name!r} is defined in hookhub.yaml and is read-only here")


class SubscriptionExists(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a subscription named {name!r} already exists")


@dataclass(frozen=True, slots=True)
class Subscription:
    name: str
    config: SubscriptionConfig
    origin: Literal["file", "api"]
    previous_secret: str | None = None  # still signed with during a rotation's overlap
    previous_secret_expires_at: float | None = None
    created_at: float | None = None

    def extra_secrets(self, now: float) -> tuple[str, ...]:
        """Secrets to sign with besides the current one: the previous one until its overlap ends."""
        if self.previous_secret and (self.previous_secret_expires_at or 0) > now:
            return (self.previous_secret,)
        return ()

    @property
    def push(self) -> bool:
        return self.config.mode == "push"


def generate_secret() -> str:
    """A fresh Standard Webhooks signing secret, as Svix generates them (24 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def config_document(config: SubscriptionConfig) -> dict[str, Any]:
    """The stored form of a config: JSON-ready, secrets in clear (the store holds them)."""
    doc = config.model_dump(mode="json", exclude_none=True)
    for key in ("secret", "token"):
        value = getattr(config, key)
        if value is not None:
            doc[key] = value.get_secret_value()
    return doc


def validated(doc: dict[str, Any]) -> SubscriptionConfig:
    """A config from a document; ValueError with one readable line per problem."""
    try:
        return SubscriptionConfig.model_validate(doc)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'subscription'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ValueError("; ".join(problems)) from None


def valid_or_none(doc: dict[str, Any]) -> SubscriptionConfig | None:
    """A stored config, or None for one that no longer validates (`refresh` skips those)."""
    try:
        return validated(doc)
    except ValueError:
        return None


class Registry:
    """File subscriptions plus the store's, refreshed on demand; changes go through here."""

    def __init__(
        self,
        file_subscriptions: dict[str, SubscriptionConfig],
        catalog: SubscriptionCatalog,
        states: SubscriptionStates,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.file = {name: Subscription(name, config, "file") for name, config in file_subscriptions.items()}
        self.catalog = catalog
        self.states = states
        self.clock = clock
        self.loaded = False  # the store's subscriptions have been read at least once
        self._current: dict[str, Subscription] = dict(self.file)
        # called after a change this process made (the hub applies the broker bindings there)
        self.on_change: Callable[[], Awaitable[None]] | None = None
        self.on_delete: Callable[[str], Awaitable[None]] | None = None
        self.on_state: Callable[[str], Awaitable[None]] | None = None  # after a pause or resume
        # what must follow a change before it is answered (a runtime subscription's RabbitmqSource
        # on Knative), given the config before and after (None: absent); when it raises, the
        # change is undone (a deletion is not started) and the error is the answer
        self.follow: Follow | None = None

    def current(self) -> dict[str, Subscription]:
        return self._current

    def get(self, name: str) -> Subscription:
        try:
            return self._current[name]
        except KeyError:
            raise UnknownSubscription(name) from None

    async def refresh(self) -> dict[str, Subscription]:
        """Re-read the store's subscriptions; on StoreUnavailable the last snapshot stays."""
        stored = await self.catalog.list()
        current = dict(self.file)
        for row in stored:
            if row.name in self.file:
                log.warning("subscription %s is in hookhub.yaml and in the store: the file wins", row.name)
                continue
            try:
                config = validated(row.config)
            except ValueError as exc:
                log.error("stored subscription %s is invalid and skipped: %s", row.name, exc)
                continue
            current[row.name] = Subscription(
                row.name,
                config,
                "api",
                row.previous_secret,
                row.previous_secret_expires_at,
                row.created_at,
            )
        self._current = current
        self.loaded = True
        return current

    async def try_refresh(self) -> dict[str, Subscription]:
        try:
            return await self.refresh()
        except StoreUnavailable as exc:
            log.warning("cannot read runtime subscriptions (keeping the last known set): %s", exc)
            return self._current

    async def create(self, name: str, doc: dict[str, Any]) -> tuple[Subscription, str | None]:
        """A new runtime subscription; a push one without `secret` gets a generated one, returned
        (with any given secret) once, here."""
        if not NAME.match(name):
            raise ValueError("name: letters, digits, '-' or '_' (1 to 100)")
        await self.refresh()
        if name in self._current:
            raise SubscriptionExists(name)
        doc = dict(doc)
        if doc.get("mode", "push") == "push" and not doc.get("secret"):
            doc["secret"] = generate_secret()
        config = validated(doc)
        now = self.clock.now()
        row = StoredSubscription(name, config_document(config), now, now)
        if not await self.catalog.create(row):
            raise SubscriptionExists(name)
        await self._changed()
        try:
            await self._follow(name, None, config)
        except Exception:
            await self._undo(name, "creation", lambda: self._uncreate(name))
            raise
        secret = config.secret.get_secret_value() if config.secret else None
        return self.get(name), secret

    async def update(self, name: str, changes: dict[str, Any]) -> Subscription:
        row = await self._stored(name)
        for key in IMMUTABLE:
            if key in changes and changes[key] != row.config.get(key, "push"):
                raise ValueError(f"{key}: cannot be changed; delete the subscription and create it again")
        doc = {**row.config, **{k: v for k, v in changes.items() if v is not None}}
        if isinstance(changes.get("backoff"), dict):
            doc["backoff"] = {**row.config.get("backoff", {}), **changes["backoff"]}
        config = validated(doc)
        before, old = replace(row), valid_or_none(row.config)
        row.config = config_document(config)
        row.updated_at = self.clock.now()
        if not await self.catalog.update(row):
            raise UnknownSubscription(name)
        await self._changed()
        try:
            await self._follow(name, old, config)
        except Exception:
            await self._undo(name, "change", lambda: self._restore(before))
            raise
        return self.get(name)

    async def delete(self, name: str) -> None:
        row = await self._stored(name)
        await self._follow(name, valid_or_none(row.config), None)  # first: if it fails, nothing changed
        if not await self.catalog.delete(name):
            raise UnknownSubscription(name)
        await self.states.forget(name)
        await self._changed()
        if self.on_delete is not None:
            await self.on_delete(name)

    async def rotate_secret(self, name: str, secret: str | None, overlap: float) -> tuple[Subscription, str]:
        """A new signing secret; the old one keeps signing (both signatures sent) for `overlap`."""
        row = await self._stored(name)  # no `follow`: a secret is in no external resource
        if row.config.get("mode", "push") != "push":
            raise ValueError("only push subscriptions sign their deliveries")
        new = secret or generate_secret()
        config = validated({**row.config, "secret": new})
        now = self.clock.now()
        row.previous_secret = row.config.get("secret")
        row.previous_secret_expires_at = now + overlap if overlap > 0 else None
        row.config = config_document(config)
        row.updated_at = now
        if not await self.catalog.update(row):
            raise UnknownSubscription(name)
        await self._changed()
        return self.get(name), new

    async def pause(self, name: str, reason: str = "") -> Subscription:
        sub = await self._known(name)
        await self.states.set(name, SubscriptionState.PAUSED, reason or "paused by an operator")
        log.info("subscription %s paused: its events wait in its queue", name)
        if self.on_state is not None:
            await self.on_state(name)
        return sub

    async def resume(self, name: str) -> Subscription:
        sub = await self._known(name)
        await self.states.set(name, SubscriptionState.ACTIVE, "")
        await self.states.set_failing(name, None)
        log.info("subscription %s resumed", name)
        if self.on_state is not None:
            await self.on_state(name)
        return sub

    async def _known(self, name: str) -> Subscription:
        if name not in self._current:
            await self.refresh()
        return self.get(name)

    async def _stored(self, name: str) -> StoredSubscription:
        if name in self.file:
            raise ReadOnly(name)
        row = await self.catalog.get(name)
        if row is None:
            raise UnknownSubscription(name)
        return row

    async def _changed(self) -> None:
        await self.refresh()
        if self.on_change is not None:
            await self.on_change()

    async def _follow(
        self, name: str, before: SubscriptionConfig | None, after: SubscriptionConfig | None
    ) -> None:
        if self.follow is not None:
            await self.follow(name, before, after)

    async def _undo(self, name: str, what: str, undo: Callable[[], Awaitable[None]]) -> None:
        """Put things back as they were; a failure here is logged (the answer is the error that
        caused the undo) and repaired by the next reconciliation (`SourceSync.reconcile`)."""
        try:
            await undo()
        except Exception as exc:
            log.error("subscription %s: its %s could not be undone: %s", name, what, exc)
        else:
            log.info("subscription %s: %s undone (what must follow it failed)", name, what)

    async def _uncreate(self, name: str) -> None:
        await self.catalog.delete(name)
        await self.states.forget(name)
        await self._changed()
        if self.on_delete is not None:
            await self.on_delete(name)  # its queue, with anything routed to it meanwhile

    async def _restore(self, row: StoredSubscription) -> None:
        await self.catalog.update(row)
        await self._changed()
