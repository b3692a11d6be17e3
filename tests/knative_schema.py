"""Offline validation of Knative resources against the CRDs' own OpenAPI schemas, made strict.

No cluster runs the tests, so the CRD schemas in the `shared/knative-crds` folder beside the
repository stand in for the API server. The schemas leave objects open, and Kubernetes prunes
unknown fields silently, so a misspelt field would vanish without an error in a cluster. Here every
object schema that lists `properties` is closed (unless it preserves unknown fields) so a typo fails.
Reused for Services now, and for Triggers and RabbitmqSources with the fan-out work.
"""

from __future__ import annotations

import copy
import functools
import os
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
