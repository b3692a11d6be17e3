"""What the hub says when it starts: the configuration it runs and what looks wrong in it.

Both `hookhub run` and a functions-framework target (on its first request) log these lines, so
an operator reading either log sees which file, which broker/store/archive (passwords hidden)
and which subscriptions are live, plus warnings a typo or a development secret deserve.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from dataclasses import dataclass

from hookhub.config import HubConfig, redact_url
from hookhub.providers.base import ProviderSettings, TypePrefixSettings
from hookhub.providers.hmac import HmacSettings, Locator


@dataclass(frozen=True, slots=True)
class TypeSpace:
    """The CloudEvents types one provider can produce: `prefix.<one or more words>`, or
    exactly `prefix` when `exact` (a generic hmac provider with a fixed `type`)."""

    provider: str
    prefix: str
    exact: bool = False


def type_space(name: str, settings: ProviderSettings) -> TypeSpace:
    """Where a provider's event types start.

    Every built-in kind types its events `com.<kind>.<...>` (its module's `to_event`); `standard`
    and `hmac` use `type_prefix`, default `com.<provider name>`; an hmac fixed `type` is used as is.
    """
    if isinstance(settings, HmacSettings):
        locator = Locator.parse(settings.type, allow_fixed=True)
        if locator.source == "fixed":
            return TypeSpace(name, locator.value, exact=True)
    if isinstance(settings, TypePrefixSettings):
        return TypeSpace(name, settings.prefix_for(name))
    return TypeSpace(name, f"com.{settings.kind}")


def can_match(pattern: str, space: TypeSpace) -> bool:
    """Whether the AMQP topic `pattern` matches at least one type in `space`."""
    words, prefix = pattern.split("."), space.prefix.split(".")

    @functools.cache
    def match(p: int, w: int) -> bool:
        if w == len(prefix):
            if space.exact:
                return all(word == "#" for word in words[p:])
            return p < len(words)  # whatever remains can match the words after the prefix
        if p == len(words):
            return False
        if words[p] == "#":
            return match(p + 1, w) or match(p, w + 1)
        return words[p] in ("*", prefix[w]) and match(p + 1, w + 1)

    return match(0, 0)


def type_pattern_findings(config: HubConfig) -> list[tuple[int, str]]:
    """(log level, message) for each subscription pattern that matches no provider's events.

    A WARNING when nothing could ever match it, or when it looks like a misspelt provider prefix.
    When producers are configured, any other unmatched pattern is assumed to be meant for their
    events (they may send any type), so it is only noted at INFO.
    """
    spaces = [type_space(name, settings) for name, settings in config.providers.items()]
    prefixes = sorted({space.prefix for space in spaces})
    known = ", ".join(prefixes) or "none: no providers configured"
    findings = []
    for sub_name, sub in config.subscriptions.items():
        for pattern in sub.types:
            if any(can_match(pattern, space) for space in spaces):
                continue
            where = f"subscription {sub_name}: type pattern {pattern!r} matches no provider's events"
            close = _closest_prefix(pattern, prefixes)
            if close:
                findings.append(
                    (logging.WARNING, f"{where} (closest provider prefix: {close}; known: {known})")
                )
            elif config.producers:
                producers = ", ".join(sorted(config.producers))
                findings.append((logging.INFO, f"{where}; only producers ({producers}) can send it"))
            else:
                findings.append((logging.WARNING, f"{where}, so it never will (known prefixes: {known})"))
    return findings


def _closest_prefix(pattern: str, prefixes: list[str]) -> str | None:
    """The prefix the pattern's leading words nearly spell (a typo, a missing `.#`), if any."""
    words = pattern.split(".")
    scored = [
        (difflib.SequenceMatcher(None, ".".join(words[: prefix.count(".") + 1]), prefix).ratio(), prefix)
        for prefix in prefixes
    ]
    best = max(scored, default=(0.0, ""))
    return best[1] if best[0] >= 0.75 else None


def startup_summary(config: HubConfig, path: str | os.PathLike[str]) -> list[str]:
    """INFO lines: the config file, the shape, each provider, producer and subscription."""
    lines = [
        f"config {path}",
        f"broker {redact_url(config.broker)}, store {redact_url(config.store)}, "
        f"archive {redact_url(config.archive)}",
    ]
    providers = [f"{name} ({settings.kind})" for name, settings in config.providers.items()]
    lines.append(f"providers: {', '.join(providers) or 'none'}")
    lines.append(f"producers: {', '.join(config.producers) or 'none'}")
    if not config.subscriptions:
        lines.append("subscriptions: none (events are kept on the broker, delivered nowhere)")
    for name, sub in config.subscriptions.items():
        target = f"push to {redact_url(str(sub.url))}" if sub.mode == "push" else "pull"
        lines.append(f"subscription {name}: {target}, types {', '.join(sub.types)}")
    lines.extend(message for level, message in type_pattern_findings(config) if level < logging.WARNING)
    return lines


def startup_warnings(config: HubConfig) -> list[str]:
    """WARNING lines: the admin API switched off, development secrets in use, and type
    patterns that look wrong."""
    warnings = []
    if config.admin_token is None:
        warnings.append("no admin_token is set: the admin API (and so the hookhub CLI) answers 403")
    if config.development_secrets:
        warnings.append(
            "development secrets in use (their defaults are in the config file for anyone to read): "
            f"set {', '.join(config.development_secrets)} before exposing this hub"
        )
    warnings.extend(message for level, message in type_pattern_findings(config) if level >= logging.WARNING)
    return warnings


def log_startup(config: HubConfig, path: str | os.PathLike[str], log: logging.Logger) -> None:
    for line in startup_summary(config, path):
        log.info(line)
    for line in startup_warnings(config):
        log.warning(line)
