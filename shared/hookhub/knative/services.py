"""The workloads: a Knative Service per function and the archiver's Deployment.

Every function runs the same image, chosen by `FUNCTION_TARGET`, with hookhub.yaml from the
ConfigMap and its `${VAR}`s from the Secret. Each Service's autoscaling values come with the reason
for each (`Scaling.why`), which the rendered file's header repeats: PyYAML writes no comments, and an
operator tuning a value should see what it was chosen for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hookhub.config import HubConfig
from hookhub.knative.common import (
    ADMIN_SERVICE_ACCOUNT,
    APPS_API,
    CONFIG_DIR,
    CONFIG_KEY,
    CONFIG_MAP,
    SECRET,
    SERVING_API,
    RenderError,
    dns_name,
    parallelism,
    push_subscriptions,
)
from hookhub.knative.sources import FANOUT
from hookhub.pull_api import MAX_WAIT

AUTOSCALING = "autoscaling.knative.dev/"
INGEST_PREFIX = "ingest-"
POD_TARGET = 100  # in-flight requests per pod before scaling out, as for the other Services
TARGET_UTILIZATION = 0.7  # Knative's default container-concurrency-target-percentage
MAX_REQUEST_SECONDS = 600  # Knative's default max-revision-timeout-seconds
OUTCOME_MARGIN_SECONDS = 30  # after the subscriber's timeout: writing the outcome to store and broker
INGEST_TIMEOUT = 30  # the hub answers 503 well before (publish_timeout)
PORT = 8080
ARCHIVER = "archiver"
ARCHIVER_GRACE_SECONDS = 60  # SIGTERM: the last batch is written to the archive before the pod goes

CONCURRENCY = (
    "scale on requests in flight: the hub's work per request waits on I/O (broker confirms, "
    "store writes, subscriber POSTs), so CPU says little about load"
)
ALWAYS_WARM = "always warm: a provider never waits for a cold start (providers time out in seconds)"
STORE_BOUND = (
    "caps the PostgreSQL connections (one pool per pod) and RabbitMQ channels; raise it with "
    "max_connections (overlays/prod does)"
)
INGEST_TARGET = (
    "an ingest request only waits for the broker's publisher confirm, so one ASGI process keeps "
    "about this many under way before latency grows"
)


@dataclass(frozen=True)
class Scaling:
    """Knative autoscaling annotations with the reason for each value."""

    min_scale: int
    max_scale: int
    target: int
    why: dict[str, str] = field(default_factory=dict)  # annotation key (without prefix) -> reason

    def annotations(self) -> dict[str, str]:
        return {
            AUTOSCALING + "min-scale": str(self.min_scale),
            AUTOSCALING + "max-scale": str(self.max_scale),
            AUTOSCALING + "metric": "concurrency",
            AUTOSCALING + "target": str(self.target),
        }

    def reasons(self) -> dict[str, str]:
        """Annotation -> reason, for every annotation set (the header comment of the file)."""
        return {AUTOSCALING + key: self.why[key] for key in ("min-scale", "max-scale", "metric", "target")}


@dataclass(frozen=True)
class Function:
    """One Knative Service: a function of main.py, where it is reachable, how it scales."""

    name: str
    target: str
    component: str
    summary: str
    public: bool
    timeout: int
    scaling: Scaling
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None


def _scaling(min_scale: int, max_scale: int, target: int, /, **why: str) -> Scaling:
    reasons = {"metric": CONCURRENCY, **{k.replace("_", "-"): v for k, v in why.items()}}
    return Scaling(min_scale, max_scale, target, reasons)


def ingest_function(provider: str) -> Function:
    return Function(
        name=dns_name(INGEST_PREFIX, provider),
        target="webhook",
        component="ingest",
        summary=f"Provider `{provider}`'s webhook endpoint: it POSTs to this Service's URL at `/`.",
        public=True,
        timeout=INGEST_TIMEOUT,
        scaling=_scaling(
            1, 20, POD_TARGET, min_scale=ALWAYS_WARM, max_scale=STORE_BOUND, target=INGEST_TARGET
        ),
        env={"HOOKHUB_PROVIDER": provider},
        labels={"hookhub.dev/provider": dns_name("", provider)},
    )


def events_function() -> Function:
    return Function(
        name="events",
        target="events",
        component="producer-api",
        summary="Producer API: internal systems POST CloudEvents with a producer token (cluster-local).",
        public=False,
        timeout=INGEST_TIMEOUT,
        scaling=_scaling(
            1,
            20,
            POD_TARGET,
            min_scale="always warm: producers never wait for a cold start",
            max_scale=STORE_BOUND,
            target=INGEST_TARGET,
        ),
    )


def admin_function(rabbitmq_cluster: str) -> Function:
    return Function(
        name="admin",
        target="admin",
        component="admin-api",
        summary=(
            "Admin API (/admin/...) for the `hookhub` CLI; runs resend jobs and keeps a RabbitmqSource "
            "per runtime push subscription (cluster-local; ServiceAccount hookhub-admin, rbac.yaml)."
        ),
        public=False,
        timeout=60,
        scaling=_scaling(
            1,
            3,
            10,
            min_scale="resend jobs run inside the admin process: one pod stays up to carry them on",
            max_scale="operator requests are few: caps the store connections a runaway script can open",
            target="admin requests scan the store (trace, dead letters, status): a few per pod at once",
        ),
        # HOOKHUB_KNATIVE_<KEY> sets hookhub.yaml's knative.<key> (config.apply_overrides): this
        # function, and only this one, creates and deletes RabbitmqSources, like render does.
        env={"HOOKHUB_KNATIVE_SOURCES": "true", "HOOKHUB_KNATIVE_RABBITMQ_CLUSTER": rabbitmq_cluster},
        service_account=ADMIN_SERVICE_ACCOUNT,
    )


def pull_function() -> Function:
    return Function(
        name="pull",
        target="pull",
        component="pull-api",
        summary="Pull API: consumers of pull subscriptions fetch and ack events over HTTP.",
        public=True,
        timeout=math.ceil(MAX_WAIT) + INGEST_TIMEOUT,
        scaling=_scaling(
            1,
            10,
            50,
            min_scale="consumers poll: one warm pod spares each first poll a cold start",
            max_scale="pulls are store writes too (receipts): the cap bounds the store connections",
            target="a pull may wait for events (long poll): in-flight requests grow with consumers, not load",
        ),
    )


def fanout_function(config: HubConfig) -> Function:
    """Cluster-local (only the sources call it), always warm, sized for every source's
    parallelism at once, with a request timeout over the longest delivery."""
    subs = push_subscriptions(config)
    in_flight = sum(parallelism(s) for s in subs.values())
    target = min(in_flight, POD_TARGET) if in_flight else POD_TARGET
    max_scale = max(2, math.ceil(in_flight / (target * TARGET_UTILIZATION)))
    longest = max((s.timeout for s in subs.values()), default=0.0)
    timeout = max(OUTCOME_MARGIN_SECONDS, math.ceil(longest) + OUTCOME_MARGIN_SECONDS)
    if timeout > MAX_REQUEST_SECONDS:
        slowest = next(n for n, s in subs.items() if s.timeout == longest)
        raise RenderError(
            f"subscriptions.{slowest}.timeout: {longest:g}s plus {OUTCOME_MARGIN_SECONDS}s to record the "
            f"outcome exceeds Knative's {MAX_REQUEST_SECONDS}s request limit"
        )
    return Function(
        name=FANOUT,
        target=FANOUT,
        component=FANOUT,
        summary="The fan-out function: one delivery attempt per event, POSTed by a RabbitmqSource.",
        public=False,
        timeout=timeout,
        scaling=_scaling(
            1,
            max_scale,
            target,
            min_scale="always warm: the sources push continuously and a cold start would stall every queue",
            max_scale=(
                f"every source's parallelism at once ({in_flight} in flight) at Knative's "
                f"{TARGET_UTILIZATION:.0%} target utilisation, at least 2"
            ),
            target=f"the sum of the sources' parallelism, at most {POD_TARGET} per pod",
        ),
    )


def functions(config: HubConfig, rabbitmq_cluster: str) -> list[Function]:
    """Every Knative Service: one per provider (sorted), then events, admin, pull and fanout."""
    return [
        *(ingest_function(name) for name in sorted(config.providers)),
        events_function(),
        admin_function(rabbitmq_cluster),
        pull_function(),
        fanout_function(config),
    ]


# Documents --------------------------------------------------------------------------------------


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hookhub", "app.kubernetes.io/component": component}


def container(image: str, env: dict[str, str], *, command: list[str] | None = None) -> dict[str, Any]:
    """Config from the ConfigMap, `${VAR}`s from the Secret, probes on the health endpoints.

    A Knative Service's port is named `http1` (HTTP/1.1) and Knative fills in its probes' port; a
    plain container (`command`, the archiver) must name the port its probes use.
    """
    port = {} if command is None else {"port": "http"}
    return {
        "name": "hookhub",
        "image": image,
        **({} if command is None else {"command": command}),
        "ports": [{"name": "http" if command else "http1", "containerPort": PORT}],
        "env": [
            *({"name": k, "value": v} for k, v in env.items()),
            {"name": "HOOKHUB_CONFIG", "value": f"{CONFIG_DIR}/{CONFIG_KEY}"},
        ],
        "envFrom": [{"secretRef": {"name": SECRET}}],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
        # broker and store reachable; else Knative stops routing requests to the pod
        "readinessProbe": {"httpGet": {"path": "/readyz", **port}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **port},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _config_volume() -> dict[str, Any]:
    return {"name": "config", "configMap": {"name": CONFIG_MAP}}


def knative_service(fn: Function, *, image: str, namespace: str) -> dict[str, Any]:
    labels = {**_labels(fn.component), **fn.labels}
    if not fn.public:
        labels["networking.knative.dev/visibility"] = "cluster-local"
    spec: dict[str, Any] = {}
    if fn.service_account:
        spec["serviceAccountName"] = fn.service_account
    spec |= {
        "containerConcurrency": 0,  # no hard cap: one ASGI process serves many requests at once
        "timeoutSeconds": fn.timeout,
        "containers": [container(image, {"FUNCTION_TARGET": fn.target, **fn.env})],
        "volumes": [_config_volume()],
    }
    return {
        "apiVersion": SERVING_API,
        "kind": "Service",
        "metadata": {"name": fn.name, "namespace": namespace, "labels": labels},
        "spec": {"template": {"metadata": {"annotations": fn.scaling.annotations()}, "spec": spec}},
    }


def archiver_deployment(*, image: str, namespace: str) -> dict[str, Any]:
    """`hookhub archiver`: consumes the archive queue into the archive and acks nothing before
    the write returned. A Deployment, not a Knative Service: it pulls from RabbitMQ and receives
    no requests, so request-driven autoscaling has nothing to count. Replicas compete for the
    queue (overlays set how many); its probes are served by the command itself."""
    labels = _labels(ARCHIVER)
    command = ["hookhub", ARCHIVER, "--config", f"{CONFIG_DIR}/{CONFIG_KEY}", "--host", "0.0.0.0"]
    main = container(image, {}, command=[*command, "--port", str(PORT)])
    return {
        "apiVersion": APPS_API,
        "kind": "Deployment",
        "metadata": {"name": ARCHIVER, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "terminationGracePeriodSeconds": ARCHIVER_GRACE_SECONDS,
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [main],
                    "volumes": [_config_volume()],
                },
            },
        },
    }
