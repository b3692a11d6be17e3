"""Knative manifests rendered from hookhub.yaml (`hookhub render knative`), and the pieces the
admin function reuses at run time.

Written to knative/base/generated/: a Knative Service per function (`ingest-<provider>` for each
provider, `events`, `admin`, `pull`, `fanout`), one eventing-rabbitmq RabbitmqSource per push
subscription consuming the hub's own predeclared quorum queue `<hub namespace>.sub.<name>` and
POSTing to `fanout` at `/<name>`, the archiver's Deployment, and a kustomization.yaml listing them.
Pull subscriptions are served by the pull API and get no source. The fan-out function handles
subscriber failures itself (retry with the subscription's backoff, dead letters) and answers 2xx
once the outcome is durable, so a source's own `delivery` only covers infrastructure trouble (5xx).

Why a RabbitmqSource rather than a RabbitMQ Broker with Triggers, and what the CRDs allow or forbid,
is in knative/README.md. Everything here is derived from the config, so the committed files are
checked against a fresh render (tests/test_render_knative.py).
"""

from hookhub.knative.common import (
    ADMIN_SERVICE_ACCOUNT,
    CONFIG_DIR,
    CONFIG_KEY,
    CONFIG_MAP,
    DEFAULT_BACKOFF_DELAY,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DEFAULT_RABBITMQ_CLUSTER,
    DEFAULT_RETRY,
    DNS_LABEL_MAX,
    PARALLELISM_MAX,
    PARALLELISM_MIN,
    SECRET,
    SERVING_API,
    SOURCE_API,
    SOURCE_PREFIX,
    RenderError,
    dns_name,
    is_dns_label,
    iso8601_duration,
    parallelism,
    source_name,
)
from hookhub.knative.render import (
    GENERATED,
    WHY,
    header,
    is_generated,
    load_hub_config,
    render,
    render_files,
    render_yaml,
    write,
)
from hookhub.knative.services import (
    ARCHIVER,
    AUTOSCALING,
    MAX_REQUEST_SECONDS,
    OUTCOME_MARGIN_SECONDS,
    POD_TARGET,
    TARGET_UTILIZATION,
    Function,
    Scaling,
    archiver_deployment,
    fanout_function,
    functions,
    knative_service,
)
from hookhub.knative.sources import FANOUT, rabbitmq_source

__all__ = [
    "ADMIN_SERVICE_ACCOUNT",
    "ARCHIVER",
    "AUTOSCALING",
    "CONFIG_DIR",
    "CONFIG_KEY",
    "CONFIG_MAP",
    "DEFAULT_BACKOFF_DELAY",
    "DEFAULT_IMAGE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RABBITMQ_CLUSTER",
    "DEFAULT_RETRY",
    "DNS_LABEL_MAX",
    "FANOUT",
    "GENERATED",
    "MAX_REQUEST_SECONDS",
    "OUTCOME_MARGIN_SECONDS",
    "PARALLELISM_MAX",
    "PARALLELISM_MIN",
    "POD_TARGET",
    "SECRET",
    "SERVING_API",
    "SOURCE_API",
    "SOURCE_PREFIX",
    "TARGET_UTILIZATION",
    "WHY",
    "Function",
    "RenderError",
    "Scaling",
    "archiver_deployment",
    "dns_name",
    "fanout_function",
    "functions",
    "header",
    "is_dns_label",
    "is_generated",
    "iso8601_duration",
    "knative_service",
    "load_hub_config",
    "parallelism",
    "rabbitmq_source",
    "render",
    "render_files",
    "render_yaml",
    "source_name",
    "write",
]
