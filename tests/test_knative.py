"""Offline checks of knative/: what `kubectl apply -k knative/` would create, without a cluster.

Knative kinds are validated against the CRD schemas with unknown fields rejected (see
knative_schema.py); core kinds and the kustomization are checked by hand; and the pieces are checked
against each other and against the hub itself (function targets, provider names, hookhub.yaml).
"""

from __future__ import annotations

import copy
import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import main
from hookhub.config import parse_config
from tests.knative_schema import crd_schemas, is_knative, require_crds, validation_errors

KNATIVE_DIR = Path(__file__).resolve().parents[1] / "knative"
EXAMPLE_SECRET = KNATIVE_DIR / "secret.example.yaml"
KUSTOMIZATION = KNATIVE_DIR / "kustomization.yaml"
MANIFESTS = sorted(p for p in KNATIVE_DIR.glob("*.yaml") if p not in (EXAMPLE_SECRET, KUSTOMIZATION))

NAMESPACE = "hookhub"
CONFIG_MAP, CONFIG_KEY = "hookhub-config", "hookhub.yaml"
SECRET = "hookhub-secrets"
CORE_KINDS = {("v1", "Namespace"), ("v1", "ConfigMap")}
FUNCTION_TARGETS = {"webhook", "events"}  # main.py's deployable targets
# Knative's autoscaling annotation keys (kebab-case); anything else under the prefix is a typo
# that Knative would ignore or reject, and the CRD schema cannot tell (annotations are a map).
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
AUTOSCALING = "autoscaling.knative.dev/"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_PLAIN_VAR = re.compile(
    r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"
)  # no `:-default`: a default would be a literal secret


# Loading ------------------------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file; each must be a mapping."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs), f"{path.name}: every document must be a mapping"
    return docs


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load_documents(path)]


def services() -> list[dict[str, Any]]:
    """Every Knative Service in the applied manifests."""
    return [
        doc
        for doc in all_documents()
        if doc["apiVersion"].startswith("serving.knative.dev/") and doc["kind"] == "Service"
    ]


def container(service: dict[str, Any]) -> dict[str, Any]:
    containers = service["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{service['metadata']['name']}: one container per function"
    return containers[0]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container(service).get("env", [])}


def config_map() -> dict[str, Any]:
    (found,) = [
        d for d in all_documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == CONFIG_MAP
    ]
    return found


def hub_yaml() -> dict[str, Any]:
    """The production hookhub.yaml embedded in the ConfigMap, parsed but not substituted."""
    data = yaml.safe_load(config_map()["data"][CONFIG_KEY])
    assert isinstance(data, dict)
    return data


def example_secret() -> dict[str, Any]:
    (secret,) = load_documents(EXAMPLE_SECRET)
    return secret


def referenced_vars(value: Any) -> set[str]:
    """Every `${VAR}` name in the strings of a loaded YAML value."""
    if isinstance(value, str):
        return set(_VAR.findall(value))
    if isinstance(value, dict):
        return set().union(*(referenced_vars(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(referenced_vars(v) for v in value))
    return set()


@pytest.fixture(scope="module")
def crd_dir() -> Path:
    return require_crds()


def service_ids() -> list[str]:
    return [s["metadata"]["name"] for s in services()]


# Schema validation --------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_is_valid(path: Path, crd_dir: Path) -> None:
    """Knative kinds pass their CRD's strict schema; nothing else but the expected core kinds appears."""
    for doc in load_documents(path):
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: apiVersion and kind are required"
        assert doc.get("metadata", {}).get("name"), f"{path.name}: metadata.name is required"
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE, f"{path.name}: wrong namespace"
        if is_knative(doc):
            assert validation_errors(doc, crd_dir) == []
        else:
            assert (doc["apiVersion"], doc["kind"]) in CORE_KINDS, f"{path.name}: unexpected {doc['kind']}"


def test_crd_schemas_are_closed(crd_dir: Path) -> None:
    """The helper really closed the schemas, and kept open what Kubernetes keeps open."""
    schema = crd_schemas(crd_dir)[("serving.knative.dev/v1", "Service")]
    template = schema["properties"]["spec"]["properties"]["template"]
    revision = template["properties"]["spec"]
    assert revision["additionalProperties"] is False
    assert revision["properties"]["containers"]["items"]["additionalProperties"] is False
    assert schema["properties"]["metadata"]["additionalProperties"] is False
    assert "additionalProperties" not in template["properties"]["metadata"]  # preserve-unknown-fields


@pytest.mark.parametrize(
    ("where", "field", "typo"),
    [
        (("spec", "template", "spec"), "containerConcurrency", "containerConcurency"),
        (("spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet"), "path", "pth"),
        (("spec", "template", "spec", "containers", 0), "envFrom", "envfrom"),
        (("metadata",), "labels", "lables"),
    ],
)
def test_misspelt_field_fails(crd_dir: Path, where: tuple[str | int, ...], field: str, typo: str) -> None:
    """A typo that a cluster would silently prune fails here instead."""
    service = copy.deepcopy(services()[0])
    assert validation_errors(service, crd_dir) == []
    node: Any = service
    for step in where:
        node = node[step]
    node[typo] = node.pop(field)
    errors = validation_errors(service, crd_dir)
    assert errors and any(typo in error for error in errors), errors


def test_int_or_string_fields(crd_dir: Path) -> None:
    """x-kubernetes-int-or-string takes a port number or a port name, nothing else."""
    service = copy.deepcopy(services()[0])
    http_get = container(service)["readinessProbe"]["httpGet"]
    for port in (8080, "http1"):
        http_get["port"] = port
        assert validation_errors(service, crd_dir) == []
    http_get["port"] = [8080]
    assert validation_errors(service, crd_dir)


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_missing_crds_skip_or_fail(
    ci: str, outcome: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the CRD folder a user's run skips, and a CI run fails."""
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        require_crds(tmp_path / "absent")


def test_kustomize_output_is_valid(crd_dir: Path) -> None:
    """What `kubectl apply -k` really sends (namespace and labels set) passes too, when kubectl exists."""
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(KNATIVE_DIR)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(KNATIVE_DIR)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed")
    rendered = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert len(docs) == len(all_documents())
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
        if is_knative(doc):
            assert validation_errors(doc, crd_dir) == []


# Core kinds and the kustomization -----------------------------------------------------------


def test_kustomization_lists_exactly_the_manifests() -> None:
    """Every manifest is applied, nothing missing is listed, and the example Secret never is."""
    (kustomization,) = load_documents(KUSTOMIZATION)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    missing = [r for r in resources if not (KNATIVE_DIR / r).is_file()]
    assert not missing, f"listed but absent: {missing}"
    assert EXAMPLE_SECRET.name not in resources, "the example Secret must not be applied"
    assert set(resources) == {p.name for p in MANIFESTS}


def test_core_manifests() -> None:
    """The Namespace exists, and the ConfigMap holds hookhub.yaml as a string."""
    docs = all_documents()
    assert any(d["kind"] == "Namespace" and d["metadata"]["name"] == NAMESPACE for d in docs)
    data = config_map()["data"]
    assert set(data) == {CONFIG_KEY}
    assert isinstance(data[CONFIG_KEY], str)


def test_example_secret() -> None:
    """The example Secret is well-formed and is the one every Service loads its environment from."""
    secret = example_secret()
    assert (secret["apiVersion"], secret["kind"]) == ("v1", "Secret")
    assert secret["metadata"]["name"] == SECRET
    assert secret["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    assert secret.get("type", "Opaque") == "Opaque"
    assert "data" not in secret, "placeholders belong in stringData (readable, no base64)"
    assert secret["stringData"] and all(isinstance(v, str) for v in secret["stringData"].values())
    assert set(secret) <= {"apiVersion", "kind", "metadata", "type", "stringData"}


# Services and their cross-references --------------------------------------------------------


def test_services_exist() -> None:
    """One Service per example provider plus the producer API, with unique names and providers."""
    names = service_ids()
    assert len(names) == len(set(names))
    providers = [env_of(s).get("HOOKHUB_PROVIDER") for s in services()]
    webhook_providers = [p for p in providers if p]
    assert len(webhook_providers) == len(set(webhook_providers)), "two Services serve one provider"
    assert {"stripe", "github", "shopify"} <= set(webhook_providers)
    assert any(env_of(s).get("FUNCTION_TARGET") == "events" for s in services())


@pytest.mark.parametrize("name", service_ids())
def test_service_targets_a_real_function(name: str) -> None:
    """FUNCTION_TARGET names a function main.py exports; webhook Services name a configured provider."""
    (service,) = [s for s in services() if s["metadata"]["name"] == name]
    env = env_of(service)
    target = env.get("FUNCTION_TARGET")
    assert target in FUNCTION_TARGETS and target in main.__all__
    assert inspect.iscoroutinefunction(vars(main)[target])
    provider = env.get("HOOKHUB_PROVIDER")
    if target == "webhook":
        assert provider in hub_yaml()["providers"], f"{name}: {provider!r} is not in hookhub.yaml"
        assert service["metadata"]["labels"].get("hookhub.dev/provider") == provider
    else:
        assert provider is None, f"{name}: HOOKHUB_PROVIDER means nothing to {target}"


@pytest.mark.parametrize("name", service_ids())
def test_service_wiring(name: str) -> None:
    """Config, secrets, port, probes, resources and scaling are what the hub and Knative need."""
    (service,) = [s for s in services() if s["metadata"]["name"] == name]
    revision = service["spec"]["template"]
    spec, c, env = revision["spec"], container(service), env_of(service)

    names = [item["name"] for item in c.get("env", [])]
    assert len(names) == len(set(names)), "duplicate env entry"
    assert "PORT" not in names, "Knative sets PORT itself and rejects it"
    assert c["image"].startswith("ghcr.io/hookhub/hookhub")

    (mount,) = [m for m in c["volumeMounts"] if env["HOOKHUB_CONFIG"].startswith(m["mountPath"] + "/")]
    assert env["HOOKHUB_CONFIG"] == f"{mount['mountPath']}/{CONFIG_KEY}"
    assert mount.get("readOnly") is True, "Knative requires ConfigMap mounts to be read-only"
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == CONFIG_MAP
    assert {"secretRef": {"name": SECRET}} in c["envFrom"]

    assert [p["containerPort"] for p in c["ports"]] == [8080]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), f"resources.{kind}"

    annotations = revision["metadata"]["annotations"]
    unknown = {
        k for k in annotations if k.startswith(AUTOSCALING) and k[len(AUTOSCALING) :] not in AUTOSCALING_KEYS
    }
    assert not unknown, f"unknown autoscaling annotations: {unknown}"
    min_scale = int(annotations[AUTOSCALING + "min-scale"])
    assert min_scale >= 1, "ingest must stay warm: a webhook never waits for a cold start"
    assert int(annotations[AUTOSCALING + "max-scale"]) >= min_scale
    assert annotations[AUTOSCALING + "metric"] == "concurrency"
    target = float(annotations[AUTOSCALING + "target"])
    assert target > 0
    concurrency = spec["containerConcurrency"]
    assert concurrency == 0 or concurrency >= target, "a hard cap below the target throttles ASGI"
    assert 0 < spec["timeoutSeconds"] <= 60


def test_embedded_config_loads_with_the_hubs_loader() -> None:
    """hookhub.yaml passes the hub's own validation once the Secret's variables are set."""
    data = hub_yaml()
    secret_env = example_secret()["stringData"]
    needed = referenced_vars(data)
    missing = needed - set(secret_env)
    assert not missing, f"hookhub.yaml references variables the example Secret lacks: {sorted(missing)}"
    environ = {name: secret_env[name] for name in needed}
    config = parse_config(data, f"{CONFIG_MAP}/{CONFIG_KEY}", environ=environ)
    assert config.broker.startswith(("amqp://", "amqps://"))
    assert config.store.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))
    assert config.archive.startswith("s3://")


def test_embedded_config_holds_no_secret_values() -> None:
    """Every secret in the ConfigMap is a ${VAR} reference: credentials live only in the Secret."""
    data = hub_yaml()
    secrets: list[tuple[str, Any]] = [("admin_token", data.get("admin_token"))]
    for name, provider in data.get("providers", {}).items():
        secrets += [(f"providers.{name}.secrets", s) for s in provider.get("secrets", [])]
        secrets.append((f"providers.{name}.token", provider.get("token")))
    for name, producer in data.get("producers", {}).items():
        secrets.append((f"producers.{name}.token", producer.get("token")))
    for key in ("broker", "store"):
        secrets.append((key, data.get(key)))
    literal = [key for key, value in secrets if value is not None and not _PLAIN_VAR.fullmatch(str(value))]
    assert not literal, f"write these as ${{VAR}} references: {literal}"
