"""Offline validation of Knative resources against the CRDs' own OpenAPI schemas, made strict.

No cluster runs the tests, so the CRD schemas in the `shared/knative-crds` folder beside the
repository stand in for the API server. The schemas leave objects open, and Kubernetes prunes
unknown fields silently, so a misspelt field would vanish without an error in a cluster. Here every
object schema that lists `properties` is closed (unless it preserves unknown fields) so a typo fails.
Core kinds (Namespace, ConfigMap, RBAC, Deployment) are checked against Kubernetes' own strict
schemas as kubernetes-validate ships them, and `admission_errors` adds what only admission webhooks
refuse (ISO-8601 durations, parallelism 1..1000, delivery-spec field names, autoscaling annotations).
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, FormatChecker

CRD_DIR = Path(__file__).resolve().parents[2] / "shared" / "knative-crds"

# metadata is plain `type: object` in CRDs (the API server handles ObjectMeta itself, pruning
# unknown keys); a closed subset so a misspelt `lables` fails too.
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

_FORMATS = FormatChecker()


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def in_ci() -> bool:
    """CI=true turns a missing prerequisite into a failure: a skipped check there is a broken run."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_crds(crd_dir: Path = CRD_DIR) -> Path:
    """The CRD folder, else skip (a user's machine) or fail (under CI=true)."""
    if crd_dir.is_dir() and any(crd_dir.glob("*.yaml")):
        return crd_dir
    reason = f"Knative CRD schemas not found at {crd_dir}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the manifest checks must run)", pytrace=False)
    pytest.skip(reason)


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A deep copy made to behave like the API server with unknown fields rejected, not pruned."""
    closed = _close(copy.deepcopy(schema))
    properties = closed.get("properties", {})
    if properties.get("metadata") == {"type": "object"}:
        properties["metadata"] = copy.deepcopy(OBJECT_META)
    return closed


def _close(node: dict[str, Any]) -> dict[str, Any]:
    """Close one schema node in place and recurse into its sub-schemas (never into data keywords)."""
    for sub in node.get("properties", {}).values():
        _close(sub)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _close(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in node.get(key, []):
            _close(sub)
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


@functools.cache
def crd_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD in `crd_dir`."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    raw = version["schema"]["openAPIV3Schema"]
                    schemas[(f"{group}/{version['name']}", kind)] = strict_schema(raw)
    return schemas


def validator_for(api_version: str, kind: str, crd_dir: Path = CRD_DIR) -> Draft7Validator:
    """A validator for one served kind; KeyError names what the CRDs do serve."""
    schemas = crd_schemas(crd_dir)
    try:
        schema = schemas[(api_version, kind)]
    except KeyError:
        served = ", ".join(f"{k} {v}" for v, k in sorted(schemas))
        raise KeyError(f"no served CRD for {kind} {api_version} in {crd_dir} (served: {served})") from None
    return Draft7Validator(schema, format_checker=_FORMATS)


def validation_errors(doc: dict[str, Any], crd_dir: Path = CRD_DIR) -> list[str]:
    """Every schema violation in `doc`, as `Kind/name: field.path: message`, sorted by path."""
    validator = validator_for(doc.get("apiVersion", ""), doc.get("kind", ""), crd_dir)
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{name}: {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def is_knative(doc: dict[str, Any]) -> bool:
    """Knative kinds are the ones whose API group ends in knative.dev (validated by CRD schema)."""
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    return group == "knative.dev" or group.endswith(".knative.dev")


# Core kinds -------------------------------------------------------------------------------------

# The Kubernetes release whose core schemas check Namespace, ConfigMap, ServiceAccount, Role,
# RoleBinding and Deployment: the oldest that Knative Serving v1.23 supports. kubernetes-validate
# ships these strict (additionalProperties: false) schemas, generated from Kubernetes' OpenAPI.
KUBERNETES_VERSION = "1.33.0"


@functools.cache
def core_validator(api_version: str, kind: str) -> Any:
    """A strict validator of a core kind from kubernetes-validate's bundled schemas."""
    import json
    import re
    from importlib.resources import files

    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    root = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    schema_file = root / f"{kind.lower()}-{group}.json"
    if not schema_file.is_file():
        raise KeyError(f"no core schema for {kind} {api_version} (Kubernetes {KUBERNETES_VERSION})")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    definitions = json.loads((root / "_definitions.json").read_text(encoding="utf-8"))
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return Draft202012Validator(schema, registry=registry, format_checker=_FORMATS)


def core_validation_errors(doc: dict[str, Any]) -> list[str]:
    validator = core_validator(doc.get("apiVersion", ""), doc.get("kind", ""))
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{name}: {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def strict_errors(doc: dict[str, Any], crd_dir: Path = CRD_DIR) -> list[str]:
    """Schema errors of any kind (CRD schema for Knative kinds, Kubernetes' for core kinds) plus
    the admission checks: what a cluster would refuse or silently drop."""
    schema = validation_errors(doc, crd_dir) if is_knative(doc) else core_validation_errors(doc)
    return schema + admission_errors(doc)


# Admission checks -------------------------------------------------------------------------------

# ISO-8601 durations as Knative parses them (github.com/rickb777/date/period): PnYnMnWnDTnHnMnS,
# any part optional but at least one, a decimal fraction allowed; written here independently of
# the renderer so a formatting bug cannot pass its own check.
_ISO_DURATION = re.compile(
    r"^P(?=\d|T\d)(?:(\d+(?:[.,]\d+)?)Y)?(?:(\d+(?:[.,]\d+)?)M)?(?:(\d+(?:[.,]\d+)?)W)?(?:(\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?=\d)(?:(\d+(?:[.,]\d+)?)H)?(?:(\d+(?:[.,]\d+)?)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# eventing's duck/v1 DeliverySpec (a Trigger's or Broker's schema preserves unknown fields here, so
# only this list catches a typo there); RabbitmqSource's CRD closes it to retry/backoff* itself.
DELIVERY_FIELDS = {
    "deadLetterSink",
    "retry",
    "backoffPolicy",
    "backoffDelay",
    "timeout",
    "retryAfterMax",
    "format",
}
DELIVERY_DURATIONS = ("backoffDelay", "timeout", "retryAfterMax")
PARALLELISM = range(1, 1001)  # eventing-rabbitmq's webhook: rabbitmqResourcesConfig.parallelism
AUTOSCALING = "autoscaling.knative.dev/"
# Knative's autoscaling annotation keys; anything else under the prefix is a typo that Knative
# would ignore or reject, and no schema can tell (annotations are a map)
AUTOSCALING_KEYS = {
    "class",
    "metric",
    "target",
    "target-utilization-percentage",
    "target-burst-capacity",
    "min-scale",
    "max-scale",
    "initial-scale",
    "activation-scale",
    "scale-down-delay",
    "window",
    "panic-window-percentage",
    "panic-threshold-percentage",
    "scale-to-zero-pod-retention-period",
}
# the API server refuses other names in requests/limits unless domain-qualified (nvidia.com/gpu)
STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
MAX_REVISION_TIMEOUT = 600  # Knative's default max-revision-timeout-seconds


def iso_seconds(value: str) -> float:
    """Seconds in an ISO-8601 duration of days, hours, minutes and seconds; AssertionError otherwise."""
    match = _ISO_DURATION.match(value) if isinstance(value, str) else None
    assert match, f"{value!r} is not an ISO-8601 duration"
    years, months, weeks, days, hours, minutes, seconds = (
        float((g or "0").replace(",", ".")) for g in match.groups()
    )
    assert not (years or months), f"{value!r}: years and months have no fixed length"
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def admission_errors(doc: dict[str, Any]) -> list[str]:
    """What the admission webhooks (Knative's, eventing-rabbitmq's, the API server's own
    validation) refuse and the schemas cannot express."""
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
    errors: list[str] = []
    meta_name = (doc.get("metadata") or {}).get("name", "")
    if not (isinstance(meta_name, str) and len(meta_name) <= 63 and _DNS_LABEL.match(meta_name)):
        errors.append(f"metadata.name {meta_name!r} is not a DNS-1123 label")
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    if isinstance(spec.get("delivery"), dict):
        errors += _delivery_errors(spec["delivery"])
    if doc.get("kind") == "RabbitmqSource":
        errors += _source_errors(spec)
    if doc.get("apiVersion", "").startswith("serving.knative.dev/") and doc.get("kind") == "Service":
        errors += _service_errors(spec)
    pod = (spec.get("template") or {}).get("spec") or {}
    for i, c in enumerate(pod.get("containers") or []):
        for kind, amounts in ((c.get("resources") or {}) if isinstance(c, dict) else {}).items():
            errors += [
                f"spec.template.spec.containers.{i}.resources.{kind}.{r}: not a resource name"
                for r in (amounts if isinstance(amounts, dict) else {})
                if r not in STANDARD_RESOURCES and "/" not in r and not r.startswith("hugepages-")
            ]
    if doc.get("kind") == "Deployment":
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            errors.append("spec.selector.matchLabels must match spec.template.metadata.labels")
    return [f"{name}: {e}" for e in errors]


def _delivery_errors(delivery: dict[str, Any]) -> list[str]:
    errors = [
        f"spec.delivery.{key}: unknown delivery field" for key in delivery if key not in DELIVERY_FIELDS
    ]
    for key in DELIVERY_DURATIONS:
        if key in delivery:
            try:
                iso_seconds(delivery[key])
            except AssertionError as exc:
                errors.append(f"spec.delivery.{key}: {exc}")
    if delivery.get("backoffPolicy", "exponential") not in ("linear", "exponential"):
        errors.append("spec.delivery.backoffPolicy: linear or exponential")
    retry = delivery.get("retry", 0)
    if not (isinstance(retry, int) and retry >= 0):
        errors.append("spec.delivery.retry: a non-negative integer")
    return errors


def _source_errors(spec: dict[str, Any]) -> list[str]:
    errors = []
    resources = spec.get("rabbitmqResourcesConfig") or {}
    if resources.get("parallelism", 1) not in PARALLELISM:
        errors.append("spec.rabbitmqResourcesConfig.parallelism: 1..1000")
    if not (resources.get("predeclared") is True or resources.get("exchangeName")):
        errors.append("spec.rabbitmqResourcesConfig: predeclared or exchangeName is required")
    if not resources.get("queueName"):
        errors.append("spec.rabbitmqResourcesConfig.queueName is required")
    cluster = spec.get("rabbitmqClusterReference") or {}
    if bool(cluster.get("name")) == bool(cluster.get("connectionSecret")):
        errors.append("spec.rabbitmqClusterReference: name xor connectionSecret")
    if not (spec.get("sink") or {}).get("ref") and not (spec.get("sink") or {}).get("uri"):
        errors.append("spec.sink: ref or uri is required")
    return errors


def _service_errors(spec: dict[str, Any]) -> list[str]:
    """Knative's webhook decodes the revision template with unknown fields disallowed, although
    the CRD preserves them in template.metadata; and it checks the autoscaling annotations."""
    errors = []
    template = spec.get("template") or {}
    meta = template.get("metadata") or {}
    errors += [f"spec.template.metadata.{e.message}" for e in Draft7Validator(OBJECT_META).iter_errors(meta)]
    annotations = meta.get("annotations") or {}
    for key in annotations:
        if key.startswith(AUTOSCALING) and key[len(AUTOSCALING) :] not in AUTOSCALING_KEYS:
            errors.append(f"spec.template.metadata.annotations: unknown autoscaling annotation {key!r}")
    scale = {}
    for key in ("min-scale", "max-scale", "target", "initial-scale"):
        value = annotations.get(AUTOSCALING + key)
        if value is not None:
            if not (isinstance(value, str) and value.isdigit()):
                errors.append(f"{AUTOSCALING}{key}: a non-negative integer string, not {value!r}")
            else:
                scale[key] = int(value)
    if scale.get("max-scale", 0) and scale.get("min-scale", 0) > scale["max-scale"]:
        errors.append(f"{AUTOSCALING}min-scale is above max-scale")
    if scale.get("target") == 0:
        errors.append(f"{AUTOSCALING}target must be positive")
    timeout = (template.get("spec") or {}).get("timeoutSeconds", 300)
    if not (isinstance(timeout, int) and 0 < timeout <= MAX_REVISION_TIMEOUT):
        errors.append(f"spec.template.spec.timeoutSeconds: 1..{MAX_REVISION_TIMEOUT}")
    return errors
