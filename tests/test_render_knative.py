"""`hookhub render knative`: every workload rendered from hookhub.yaml, checked offline.

Every rendered document passes its strict schema and the admission checks (tests/knative_schema.py:
ISO-8601 delays, parallelism 1..1000, DNS-1123 names, delivery field names, autoscaling annotations);
the committed knative/base/generated/ must equal a fresh render of knative/base/hookhub.yaml, so the
two never drift.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hookhub import knative
from hookhub.cli import app
from hookhub.config import HubConfig, parse_config
from tests.knative_schema import iso_seconds, require_crds, strict_errors, validation_errors

ROOT = Path(__file__).resolve().parents[1]
KNATIVE_DIR = ROOT / "knative"
GENERATED_DIR = KNATIVE_DIR / "base" / "generated"
HUB_YAML = KNATIVE_DIR / "base" / "hookhub.yaml"
BROKER = "amqp://hookhub:pw@rabbitmq.rabbitmq.svc.cluster.local:5672/hookhub"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def hub(subscriptions: dict[str, Any], **settings: Any) -> HubConfig:
    return parse_config({"broker": BROKER, **settings, "subscriptions": subscriptions}, "test", environ={})


def push(**fields: Any) -> dict[str, Any]:
    return {"url": "http://subscriber.test/hooks", "types": ["com.example.#"], **fields}


PULL = {"mode": "pull", "token": "t", "types": ["com.example.#"]}
MIXED = hub(
    {
        "crm": push(max_in_flight=16, timeout="10s"),
        "Data_Lake": push(max_in_flight=5000, timeout="45s"),  # clamped to 1000; name converted
        "warehouse": PULL,
        "x" * 80: push(max_in_flight=1),  # longer than a DNS label
    }
)


def sources(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """RabbitmqSources by the subscription name they carry."""
    return {
        d["metadata"]["annotations"]["hookhub.dev/subscription"]: d
        for d in docs
        if d["kind"] == "RabbitmqSource"
    }


def fanout(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "fanout"]
    return service


def service(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
    return found


def env_of(workload: dict[str, Any]) -> dict[str, str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.fixture(scope="module")
def crd_dir() -> Path:
    return require_crds()


def example_environ() -> dict[str, str]:
    """The example Secret's values: what hookhub.yaml's ${VAR}s resolve to in a test."""
    (secret,) = [d for d in yaml.safe_load_all((KNATIVE_DIR / "secret.example.yaml").read_text()) if d]
    return dict(secret["stringData"])


# Schema and admission -----------------------------------------------------------------------


def test_every_document_validates_strictly(crd_dir: Path) -> None:
    """Services, RabbitmqSources and the Deployment pass their schemas with unknown fields
    rejected, and the admission checks."""
    docs = knative.render(MIXED)
    assert {(d["apiVersion"], d["kind"]) for d in docs} == {
        ("serving.knative.dev/v1", "Service"),
        ("sources.knative.dev/v1alpha1", "RabbitmqSource"),
        ("apps/v1", "Deployment"),
    }
    for doc in docs:
        assert strict_errors(doc, crd_dir) == []


@pytest.mark.parametrize(
    ("where", "field", "typo"),
    [
        (("spec", "delivery"), "backoffPolicy", "backofPolicy"),
        (("spec", "rabbitmqResourcesConfig"), "queueName", "queue"),
        (("spec", "sink"), "uri", "url"),
        (("spec",), "rabbitmqClusterReference", "rabbitmqCluster"),
    ],
)
def test_misspelt_source_field_fails(crd_dir: Path, where: tuple[str, ...], field: str, typo: str) -> None:
    """A cluster would prune these silently (the source would then consume nothing, or POST to `/`)."""
    source = copy.deepcopy(sources(knative.render(MIXED))["crm"])
    node: Any = source
    for step in where:
        node = node[step]
    node[typo] = node.pop(field)
    errors = validation_errors(source, crd_dir)
    assert errors and any(typo in e for e in errors), errors


def test_source_delivery_has_no_dead_letter_sink(crd_dir: Path) -> None:
    """The RabbitmqSource CRD (unlike a Trigger's) has no delivery.deadLetterSink: rendering one
    would be pruned by a cluster, so none is rendered (knative/README.md, "Dead letters")."""
    source = copy.deepcopy(sources(knative.render(MIXED))["crm"])
    assert "deadLetterSink" not in source["spec"]["delivery"]
    source["spec"]["delivery"]["deadLetterSink"] = {"uri": "/crm/dead-letter"}
    assert any("deadLetterSink" in e for e in validation_errors(source, crd_dir))


def test_admission_rules() -> None:
    """What the schema leaves to webhooks and controllers: delays, policy, bounds, names, references."""
    for name, source in sources(knative.render(MIXED)).items():
        meta, spec = source["metadata"], source["spec"]
        assert _DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        delivery = spec["delivery"]
        assert delivery["backoffPolicy"] in ("linear", "exponential")
        assert delivery["backoffPolicy"] == "exponential"
        assert iso_seconds(delivery["backoffDelay"]) == knative.DEFAULT_BACKOFF_DELAY
        assert isinstance(delivery["retry"], int) and 0 <= delivery["retry"] < 2**31
        resources = spec["rabbitmqResourcesConfig"]  # required by the webhook, not the schema
        assert 1 <= resources["parallelism"] <= 1000
        assert resources["predeclared"] is True or resources.get("exchangeName"), name
        assert resources["queueName"]
        cluster = spec["rabbitmqClusterReference"]
        assert bool(cluster.get("name")) != bool(cluster.get("connectionSecret")), "name xor connectionSecret"
        assert spec["sink"]["ref"]["name"] == "fanout" and spec["sink"]["uri"].startswith("/")


@pytest.mark.parametrize(
    ("seconds", "iso"), [(1, "PT1S"), (0.25, "PT0.25S"), (0.2, "PT0.2S"), (90, "PT90S"), (3600, "PT3600S")]
)
def test_iso8601_durations(seconds: float, iso: str) -> None:
    assert knative.iso8601_duration(seconds) == iso
    assert iso_seconds(iso) == pytest.approx(seconds)


def test_iso8601_parser_rejects_go_durations() -> None:
    """The checker itself: `1s` (Go) or `P` or `PT` are not ISO-8601."""
    for bad in ("1s", "P", "PT", "PT1", "500ms", "P1H"):
        with pytest.raises(AssertionError):
            iso_seconds(bad)


def test_backoff_delay_and_retry_are_options() -> None:
    source = sources(knative.render(MIXED, retry=3, backoff_delay=0.5))["crm"]
    assert source["spec"]["delivery"] == {
        "retry": 3,
        "backoffPolicy": "exponential",
        "backoffDelay": "PT0.5S",
    }
    with pytest.raises(knative.RenderError):
        knative.render(MIXED, retry=-1)
    with pytest.raises(knative.RenderError):
        knative.render(MIXED, backoff_delay=0)


# Subscriptions -> sources --------------------------------------------------------------------


def test_one_source_per_push_subscription_none_for_pull() -> None:
    docs = knative.render(MIXED)
    found = sources(docs)
    assert sorted(found) == sorted(n for n, s in MIXED.subscriptions.items() if s.mode == "push")
    assert "warehouse" not in found
    assert len([d for d in docs if d["kind"] == "RabbitmqSource"]) == len(found)  # exactly one each
    for name, source in found.items():
        spec = source["spec"]
        assert spec["rabbitmqResourcesConfig"]["queueName"] == f"hookhub.sub.{name}"
        assert spec["sink"] == {
            "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "fanout"},
            "uri": f"/{name}",
        }


def test_queue_names_follow_the_hubs_namespace_not_kubernetes() -> None:
    config = hub({"crm": push()}, namespace="acme")
    (source,) = sources(knative.render(config, namespace="prod")).values()
    assert source["spec"]["rabbitmqResourcesConfig"]["queueName"] == "acme.sub.crm"
    assert source["metadata"]["namespace"] == "prod"


def test_parallelism_is_max_in_flight_clamped() -> None:
    found = sources(knative.render(MIXED))
    assert found["crm"]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 16
    assert found["Data_Lake"]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 1000
    assert found["x" * 80]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 1


@pytest.mark.parametrize(
    ("broker", "vhost"),
    [
        (BROKER, "hookhub"),
        ("amqps://u:p@h:5671/team%2Fa", "team/a"),
        ("amqp://u:p@h:5672/%2F", None),
        ("amqp://u:p@h:5672", None),
    ],
)
def test_vhost_comes_from_the_broker_url(broker: str, vhost: str | None) -> None:
    config = parse_config({"broker": broker, "subscriptions": {"crm": push()}}, environ={})
    (source,) = sources(knative.render(config)).values()
    assert source["spec"]["rabbitmqResourcesConfig"].get("vhost") == vhost


def test_a_non_rabbitmq_broker_cannot_be_rendered() -> None:
    config = parse_config({"subscriptions": {"crm": push()}}, environ={})  # sqlite default
    with pytest.raises(knative.RenderError, match=r"^broker: "):
        knative.render(config)


@pytest.mark.parametrize(
    ("cluster", "reference"),
    [("rabbitmq", {"name": "rabbitmq"}), ("mq/main", {"name": "main", "namespace": "mq"})],
)
def test_rabbitmq_cluster_reference(cluster: str, reference: dict[str, str]) -> None:
    (source,) = sources(knative.render(hub({"crm": push()}), rabbitmq_cluster=cluster)).values()
    assert source["spec"]["rabbitmqClusterReference"] == reference
    with pytest.raises(knative.RenderError):
        knative.render(hub({"crm": push()}), rabbitmq_cluster="Bad_Name")


# Names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subscription", "expected"),
    [
        ("crm", "sub-crm"),
        ("crm-eu", "sub-crm-eu"),
        ("data_lake", re.compile(r"^sub-data-lake-[0-9a-f]{8}$")),
        ("Data_Lake", re.compile(r"^sub-data-lake-[0-9a-f]{8}$")),
        ("_x_", re.compile(r"^sub-x-[0-9a-f]{8}$")),
        ("__", re.compile(r"^sub-[0-9a-f]{8}$")),
        ("y" * 80, re.compile(r"^sub-y{50}-[0-9a-f]{8}$")),
    ],
)
def test_source_names_are_dns_labels(subscription: str, expected: str | re.Pattern[str]) -> None:
    """Lowercase, `_` -> `-`, trimmed; a hash of the original name when that changed anything."""
    name = knative.source_name(subscription)
    assert _DNS_LABEL.match(name) and len(name) <= 63
    assert name == expected if isinstance(expected, str) else expected.match(name)
    assert knative.source_name(subscription) == name  # stable across renders


def test_names_that_convert_alike_stay_distinct() -> None:
    config = hub({"crm-a": push(), "crm_a": push(), "CRM-A": push()})
    names = [d["metadata"]["name"] for d in knative.render(config) if d["kind"] == "RabbitmqSource"]
    assert len(set(names)) == 3 and "sub-crm-a" in names


# The fanout Service ---------------------------------------------------------------------------


def test_fanout_service() -> None:
    service = fanout(knative.render(MIXED, image="registry.test/hookhub:1.2", namespace="prod"))
    meta, template = service["metadata"], service["spec"]["template"]
    assert meta == {
        "name": "fanout",
        "namespace": "prod",
        "labels": {
            "app.kubernetes.io/name": "hookhub",
            "app.kubernetes.io/component": "fanout",
            "networking.knative.dev/visibility": "cluster-local",  # only the sources may call it
        },
    }
    (container,) = template["spec"]["containers"]
    assert container["image"] == "registry.test/hookhub:1.2"
    assert {"name": "FUNCTION_TARGET", "value": "fanout"} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["envFrom"] == [{"secretRef": {"name": "hookhub-secrets"}}]
    assert template["spec"]["volumes"] == [{"name": "config", "configMap": {"name": "hookhub-config"}}]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    # every source's parallelism (16 + 1000 + 1) at once, 100 per pod at 70% utilisation
    assert annotations["autoscaling.knative.dev/target"] == "100"
    assert annotations["autoscaling.knative.dev/max-scale"] == "15"
    # the slowest subscriber (45s) plus time to record the outcome
    assert template["spec"]["timeoutSeconds"] == 75


@pytest.mark.parametrize(("subscriptions", "target"), [({"crm": push(max_in_flight=16)}, "16"), ({}, "100")])
def test_fanout_target_is_the_total_in_flight(subscriptions: dict[str, Any], target: str) -> None:
    """A small total fits the warm pod; no push subscription at all gets the default."""
    annotations = fanout(knative.render(hub(subscriptions)))["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/target"] == target
    assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1


def test_a_timeout_beyond_knatives_limit_is_refused() -> None:
    with pytest.raises(knative.RenderError, match=r"^subscriptions\.slow\.timeout: "):
        knative.render(hub({"crm": push(), "slow": push(timeout="10m")}))


# Output ---------------------------------------------------------------------------------------


def test_render_yaml_is_the_documents() -> None:
    text = knative.render_yaml(MIXED)
    assert text.startswith(knative.GENERATED)
    assert [d for d in yaml.safe_load_all(text) if d] == knative.render(MIXED)


def test_render_files_and_their_kustomization() -> None:
    files = knative.render_files(MIXED)
    kustomization = yaml.safe_load(files["kustomization.yaml"])
    assert kustomization["resources"] == [n for n in files if n != "kustomization.yaml"]
    assert all(text.startswith(knative.GENERATED) for text in files.values())
    for name, text in files.items():
        if name != "kustomization.yaml":
            assert f"{yaml.safe_load(text)['metadata']['name']}.yaml" == name


def test_write_replaces_its_own_files_only(tmp_path: Path) -> None:
    knative.write(MIXED, tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    knative.write(hub({"crm": push()}), tmp_path)  # subscriptions removed: their files go
    assert {p.name for p in tmp_path.iterdir()} == {
        *("events.yaml", "admin.yaml", "pull.yaml", "fanout.yaml", "archiver.yaml"),
        *("sub-crm.yaml", "kustomization.yaml"),
    }
    assert before > {p.name for p in tmp_path.iterdir()}
    (tmp_path / "notes.yaml").write_text("mine: true\n")
    knative.write(hub({"crm": push()}), tmp_path)
    assert (tmp_path / "notes.yaml").exists(), "a file we did not write is never deleted"
    (tmp_path / "kustomization.yaml").write_text("resources: []\n")
    with pytest.raises(FileExistsError):
        knative.write(hub({"crm": push()}), tmp_path)


# The committed example -------------------------------------------------------------------------


def test_committed_generated_equals_a_fresh_render() -> None:
    """knative/base/generated/ is what `hookhub render knative` makes of knative/base/hookhub.yaml
    today: re-render it after changing providers or subscriptions (knative/README.md)."""
    config = knative.load_hub_config(HUB_YAML, environ=example_environ())
    expected = knative.render_files(config)
    committed = {p.name: p.read_text(encoding="utf-8") for p in GENERATED_DIR.iterdir() if p.is_file()}
    assert sorted(committed) == sorted(expected), "re-run: hookhub render knative (knative/README.md)"
    for name, text in expected.items():
        assert committed[name] == text, f"generated/{name} is stale: re-run hookhub render knative"


def test_example_has_push_and_pull_subscriptions() -> None:
    config = knative.load_hub_config(HUB_YAML, environ=example_environ())
    modes = {s.mode for s in config.subscriptions.values()}
    assert modes == {"push", "pull"}


# CLI ------------------------------------------------------------------------------------------


def test_cli_writes_the_files(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    result = CliRunner().invoke(
        app, ["render", "knative", "--config", str(HUB_YAML), "--out", str(out)], env=example_environ()
    )
    assert result.exit_code == 0, result.output
    assert "7 Knative Services, 1 RabbitmqSource(s), 1 Deployment" in result.output
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        p.name: p.read_text() for p in GENERATED_DIR.iterdir()
    }


def test_cli_options_and_stdout(tmp_path: Path) -> None:
    config = tmp_path / "hookhub.yaml"
    config.write_text(yaml.safe_dump({"broker": BROKER, "subscriptions": {"crm": push(), "wh": PULL}}))
    result = CliRunner().invoke(
        app,
        [
            "render",
            "knative",
            "-c",
            str(config),
            "--out",
            "-",
            "--image",
            "registry.test/hookhub:2",
            "--namespace",
            "prod",
            "--rabbitmq-cluster",
            "mq/main",
        ],
    )
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    expected = knative.render(
        hub({"crm": push(), "wh": PULL}),
        image="registry.test/hookhub:2",
        namespace="prod",
        rabbitmq_cluster="mq/main",
    )
    assert docs == expected


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (
            {"broker": BROKER, "subscriptions": {"crm": push(max_in_flight=0)}},
            "subscriptions.crm.max_in_flight",
        ),
        ({"broker": BROKER, "subscriptions": {"crm": {"types": ["a"]}}}, "subscriptions.crm"),
        ({"subscriptions": {"crm": push()}}, "broker"),  # valid for the hub, not for RabbitmqSources
    ],
)
def test_cli_refuses_a_broken_config(tmp_path: Path, content: dict[str, Any], key: str) -> None:
    config = tmp_path / "hookhub.yaml"
    config.write_text(yaml.safe_dump(content))
    result = CliRunner().invoke(
        app, ["render", "knative", "--config", str(config), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert f"{key}:" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_names_the_key_inside_a_configmap(tmp_path: Path) -> None:
    data = yaml.safe_load(HUB_YAML.read_text())
    data["subscriptions"]["crm"]["max_in_flight"] = "many"
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"hookhub.yaml": yaml.safe_dump(data)}}
    path = tmp_path / "configmap.yaml"
    path.write_text(yaml.safe_dump(configmap))
    result = CliRunner().invoke(app, ["render", "knative", "--config", str(path)], env=example_environ())
    assert result.exit_code == 2
    assert "data.hookhub.yaml: subscriptions.crm.max_in_flight" in result.output


# The other workloads ------------------------------------------------------------------------------

PROVIDERS = {
    "github": {"kind": "github", "secrets": ["a-github-secret-of-some-length"]},
    "Shop_EU": {"kind": "shopify", "secrets": ["a-shopify-secret-of-some-length"]},
}


def test_one_ingest_service_per_provider() -> None:
    """`ingest-<provider>` (a DNS label even for names Kubernetes refuses) runs the webhook
    function for exactly that provider, publicly reachable."""
    config = parse_config({"broker": BROKER, "providers": PROVIDERS}, "test", environ={})
    docs = knative.render(config)
    ingest = {env_of(d)["HOOKHUB_PROVIDER"]: d for d in docs if d["metadata"]["name"].startswith("ingest-")}
    assert sorted(ingest) == sorted(PROVIDERS)
    assert ingest["github"]["metadata"]["name"] == "ingest-github"
    assert re.fullmatch(r"ingest-shop-eu-[0-9a-f]{8}", ingest["Shop_EU"]["metadata"]["name"])
    for doc in ingest.values():
        assert env_of(doc)["FUNCTION_TARGET"] == "webhook"
        assert "networking.knative.dev/visibility" not in doc["metadata"]["labels"], "providers reach it"


def test_admin_service_manages_sources_like_render() -> None:
    """The admin function runs as the ServiceAccount rbac.yaml binds, with runtime sources on and
    the same RabbitmqCluster the rendered sources use."""
    docs = knative.render(MIXED, rabbitmq_cluster="mq/main")
    admin = service(docs, "admin")
    assert admin["spec"]["template"]["spec"]["serviceAccountName"] == "hookhub-admin"
    env = env_of(admin)
    assert env["FUNCTION_TARGET"] == "admin"
    assert (env["HOOKHUB_KNATIVE_SOURCES"], env["HOOKHUB_KNATIVE_RABBITMQ_CLUSTER"]) == ("true", "mq/main")
    for doc in docs:
        if doc["kind"] == "Service" and doc is not admin:
            assert "serviceAccountName" not in doc["spec"]["template"]["spec"]


def test_pull_and_events_services() -> None:
    docs = knative.render(MIXED)
    pull, events = service(docs, "pull"), service(docs, "events")
    assert env_of(pull)["FUNCTION_TARGET"] == "pull"
    assert "networking.knative.dev/visibility" not in pull["metadata"]["labels"], "consumers are outside"
    # a pull may wait up to the pull API's limit; the request timeout leaves room after it
    assert pull["spec"]["template"]["spec"]["timeoutSeconds"] > 30
    assert env_of(events)["FUNCTION_TARGET"] == "events"
    assert events["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"


def test_archiver_deployment() -> None:
    docs = knative.render(MIXED, image="registry.test/hookhub:3", namespace="prod")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["metadata"] == {
        "name": "archiver",
        "namespace": "prod",
        "labels": {"app.kubernetes.io/name": "hookhub", "app.kubernetes.io/component": "archiver"},
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.test/hookhub:3"
    assert container["command"][:2] == ["hookhub", "archiver"]
    assert "FUNCTION_TARGET" not in env_of(deployment)


def test_every_service_file_says_why_for_each_autoscaling_value() -> None:
    files = knative.render_files(MIXED)
    for name, text in files.items():
        doc = yaml.safe_load(text)
        if doc["kind"] != "Service":
            continue
        scale = doc["spec"]["template"]["metadata"]["annotations"]
        for key, value in scale.items():
            assert re.search(rf"^# why {re.escape(key)}={re.escape(value)}: .{{20,}}$", text, re.M), (
                name,
                key,
            )


def test_render_yaml_carries_the_reasons_too() -> None:
    text = knative.render_yaml(MIXED)
    assert text.count(f"{knative.WHY}autoscaling.knative.dev/min-scale=") == len(
        [d for d in knative.render(MIXED) if d["kind"] == "Service"]
    )
