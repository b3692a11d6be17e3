"""Names, limits and value formats that Kubernetes, Knative and eventing-rabbitmq accept."""

from __future__ import annotations

import hashlib
import re

from hookhub.config import HubConfig, SubscriptionConfig

SERVING_API = "serving.knative.dev/v1"
SOURCE_API = "sources.knative.dev/v1alpha1"  # the only version rabbitmqsource.yaml serves
APPS_API = "apps/v1"

DEFAULT_IMAGE = "ghcr.io/hookhub/hookhub:latest"
DEFAULT_NAMESPACE = "hookhub"
DEFAULT_RABBITMQ_CLUSTER = "rabbitmq/rabbitmq"  # [namespace/]name of a RabbitmqCluster
# Infrastructure failures only (fanout answers 5xx while the store or broker is down): exponential
# waits of delay*2^n, so 10 retries from 1s ride out 17 to 34 minutes of outage per event.
DEFAULT_RETRY = 10
DEFAULT_BACKOFF_DELAY = 1.0

CONFIG_MAP, CONFIG_KEY, CONFIG_DIR, SECRET = (
    "hookhub-config",
    "hookhub.yaml",
    "/etc/hookhub",
    "hookhub-secrets",
)
ADMIN_SERVICE_ACCOUNT = "hookhub-admin"  # knative/base/rbac.yaml: may manage RabbitmqSources
PARALLELISM_MIN, PARALLELISM_MAX = 1, 1000  # rabbitmqsource.yaml: rabbitmqResourcesConfig.parallelism
DNS_LABEL_MAX = 63
SOURCE_PREFIX = "sub-"  # RabbitmqSource `sub-<name>` mirrors queue `<ns>.sub.<name>`

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class RenderError(ValueError):
    """A valid config that cannot become Knative manifests; the message names the key."""


def is_dns_label(name: str) -> bool:
    """RFC 1123 label: what Kubernetes requires of these object names (and of label values' length)."""
    return len(name) <= DNS_LABEL_MAX and bool(_DNS_LABEL.match(name))


def dns_name(prefix: str, name: str) -> str:
    """`prefix` + `name` as a DNS-1123 label, for names the hub allows and Kubernetes may not.

    The name is lowercased, `_` becomes `-` and leading/trailing `-` are dropped. When that changed
    anything (or the result is too long) the first 8 hex digits of the original name's SHA-256 are
    appended, so names that convert alike (`crm_a`, `crm-a`, `CRM-A`) still get distinct, stable
    resources.
    """
    base = name.lower().replace("_", "-").strip("-")
    if base == name and len(prefix + base) <= DNS_LABEL_MAX:
        return prefix + base
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    base = base[: DNS_LABEL_MAX - len(prefix) - len(digest) - 1].rstrip("-")
    return f"{prefix}{base}-{digest}" if base else prefix + digest


def source_name(subscription: str) -> str:
    """The RabbitmqSource's name for a subscription (`sub-<name>`, see `dns_name`)."""
    return dns_name(SOURCE_PREFIX, subscription)


def iso8601_duration(seconds: float) -> str:
    """`PT1S`, `PT0.25S`, `PT90S`: Knative parses delivery delays as ISO-8601 and the source's
    controller silently drops what it cannot parse (a Go duration such as `1s` included)."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise RenderError(f"a delay must be at least 1ms, not {seconds!r}s")
    whole, frac = divmod(millis, 1000)
    return f"PT{whole}.{frac:03d}".rstrip("0") + "S" if frac else f"PT{whole}S"


def parallelism(sub: SubscriptionConfig) -> int:
    """The source's consumers (and prefetch) = the subscription's max_in_flight, within the CRD's 1..1000."""
    return max(PARALLELISM_MIN, min(PARALLELISM_MAX, sub.max_in_flight))


def push_subscriptions(config: HubConfig) -> dict[str, SubscriptionConfig]:
    """Push subscriptions by name, sorted, so the output does not depend on the file's order."""
    return {name: sub for name, sub in sorted(config.subscriptions.items()) if sub.mode == "push"}
