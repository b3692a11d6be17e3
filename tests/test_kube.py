"""The Kubernetes client against a fake API server that validates every object against the
RabbitmqSource CRD: create, replace on 409 with the resourceVersion kept, delete, list, errors,
and the in-cluster ServiceAccount wiring."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookhub.kube import KubeClient, KubeError, KubeUnavailable, plural_of, resource_path
from tests.knative_schema import require_crds
from tests.support.fake_kube import FakeKube, free_port, running_fake_kube

API = "sources.knative.dev/v1alpha1"
PLURAL = "rabbitmqsources"


def source(name: str = "sub-crm", parallelism: int = 4, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "RabbitmqSource",
        "metadata": {"name": name, "namespace": "hookhub", "labels": {"app": "hookhub", **labels}},
        "spec": {
            "rabbitmqClusterReference": {"name": "rabbitmq", "namespace": "rabbitmq"},
            "rabbitmqResourcesConfig": {
                "predeclared": True,
                "queueName": "hookhub.sub.crm",
                "parallelism": parallelism,
            },
            "delivery": {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT1S"},
            "sink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "fanout"}},
        },
    }


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    require_crds()
    async with running_fake_kube(token="t0ken") as fake:
        yield fake


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[KubeClient]:
    c = KubeClient(kube.url, "hookhub", token="t0ken")
    yield c
    await c.close()


def test_paths_and_plurals() -> None:
    assert resource_path("v1", "configmaps", "ns", "x") == "/api/v1/namespaces/ns/configmaps/x"
    assert (
        resource_path(API, PLURAL, "ns") == "/apis/sources.knative.dev/v1alpha1/namespaces/ns/rabbitmqsources"
    )
    assert [plural_of(k) for k in ("RabbitmqSource", "Policy", "Ingress", "Gateway")] == [
        "rabbitmqsources",
        "policies",
        "ingresses",
        "gateways",
    ]


async def test_apply_creates_then_replaces_keeping_the_resource_version(
    kube: FakeKube, client: KubeClient
) -> None:
    created = await client.apply(source(parallelism=4))
    assert kube.objects["sub-crm"]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 4
    replaced = await client.apply(source(parallelism=9))
    assert [(c.method, c.path.rsplit("/", 1)[-1]) for c in kube.calls] == [
        ("POST", PLURAL),
        ("POST", PLURAL),  # 409 AlreadyExists
        ("GET", "sub-crm"),
        ("PUT", "sub-crm"),
    ]
    assert kube.objects["sub-crm"]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 9
    assert int(replaced["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


async def test_a_replace_that_meets_another_writer_reads_again(kube: FakeKube, client: KubeClient) -> None:
    await client.apply(source(parallelism=4))
    kube.conflicts = 2  # two replaces in a row find the object changed meanwhile
    await client.apply(source(parallelism=7))
    assert [c.method for c in kube.calls[1:]] == ["POST", "GET", "PUT", "GET", "PUT", "GET", "PUT"]
    assert kube.objects["sub-crm"]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 7


async def test_a_replace_that_always_conflicts_gives_up_with_a_clear_error(
    kube: FakeKube, client: KubeClient
) -> None:
    await client.apply(source())
    kube.conflicts = 100
    with pytest.raises(KubeError, match="kept changing") as caught:
        await client.apply(source(parallelism=2))
    assert caught.value.status == 409


async def test_delete_and_list(kube: FakeKube, client: KubeClient) -> None:
    await client.apply(source("sub-a", mine="yes"))
    await client.apply(source("sub-b"))
    assert [o["metadata"]["name"] for o in await client.list(API, PLURAL, "mine=yes")] == ["sub-a"]
    assert len(await client.list(API, PLURAL)) == 2
    assert await client.delete(API, PLURAL, "sub-a") is True
    assert await client.delete(API, PLURAL, "sub-a") is False  # 404: already gone
    assert await client.get(API, PLURAL, "sub-a") is None
    assert set(kube.objects) == {"sub-b"}


async def test_an_invalid_object_is_refused_with_the_servers_reasons(
    kube: FakeKube, client: KubeClient
) -> None:
    typo = source()
    typo["spec"]["rabbitmqResourcesConfig"]["paralelism"] = typo["spec"]["rabbitmqResourcesConfig"].pop(
        "parallelism"
    )
    typo["spec"]["delivery"]["backoffDelay"] = "1s"  # a Go duration: the webhook wants ISO-8601
    with pytest.raises(KubeError) as caught:
        await client.apply(typo)
    assert caught.value.status == 422
    assert "paralelism" in caught.value.message and "backoffDelay" in caught.value.message
    bad_name = source("Sub_CRM")
    with pytest.raises(KubeError, match="RFC 1123"):
        await client.apply(bad_name)
    assert kube.objects == {}


async def test_unreachable_and_5xx_are_unavailable_not_refusals(kube: FakeKube, client: KubeClient) -> None:
    kube.unavailable = True
    with pytest.raises(KubeUnavailable, match="503"):
        await client.apply(source())
    closed = KubeClient(f"http://127.0.0.1:{free_port()}", "hookhub", timeout=2.0)
    try:
        with pytest.raises(KubeUnavailable, match="unreachable"):
            await closed.delete(API, PLURAL, "sub-crm")
    finally:
        await closed.close()


async def test_a_wrong_token_is_a_refusal(kube: FakeKube) -> None:
    wrong = KubeClient(kube.url, "hookhub", token="nope")
    try:
        with pytest.raises(KubeError) as caught:
            await wrong.apply(source())
        assert caught.value.status == 401
    finally:
        await wrong.close()


async def test_in_cluster_reads_the_service_account_and_its_rotated_token(
    kube: FakeKube, tmp_path: Path
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "namespace").write_text("hookhub\n")
    (account / "token").write_text("old-token")
    kube.token = "old-token"
    client = KubeClient.in_cluster(api_url=kube.url, account=account, environ={})
    try:
        assert client.namespace == "hookhub"
        await client.apply(source("sub-a"))
        (account / "token").write_text("t0ken\n")  # the kubelet rotated it
        kube.token = "t0ken"
        await client.apply(source("sub-b"))
        assert set(kube.objects) == {"sub-a", "sub-b"}
    finally:
        await client.close()


def test_in_cluster_outside_a_pod_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="KUBERNETES_SERVICE_HOST"):
        KubeClient.in_cluster(account=tmp_path, environ={})
    with pytest.raises(ValueError, match="namespace"):
        KubeClient.in_cluster(account=tmp_path, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    client = KubeClient.in_cluster(
        account=tmp_path,
        namespace="ns",
        environ={"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
    )
    assert str(client._http.base_url) == "https://[fd00::1]:6443"


async def test_the_client_refuses_another_namespace(client: KubeClient) -> None:
    other = copy.deepcopy(source())
    other["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(ValueError, match="elsewhere"):
        await client.apply(other)


async def test_the_admin_role_grants_exactly_the_verbs_the_client_uses(
    kube: FakeKube, client: KubeClient
) -> None:
    """knative/base/rbac.yaml against what the hub does (least privilege): a missing verb would be
    a 403 in the cluster, an extra one a permission nobody needs."""
    await client.apply(source())
    await client.apply(source(parallelism=2))  # replace: get + update
    await client.list(API, PLURAL, "mine=yes")
    await client.delete(API, PLURAL, "sub-crm")
    verb = {"POST": "create", "PUT": "update", "DELETE": "delete"}
    used = {verb.get(c.method) or ("list" if c.path.endswith(f"/{PLURAL}") else "get") for c in kube.calls}
    rbac = Path(__file__).resolve().parents[1] / "knative" / "base" / "rbac.yaml"
    (role,) = [d for d in yaml.safe_load_all(rbac.read_text(encoding="utf-8")) if d["kind"] == "Role"]
    (rule,) = role["rules"]
    assert rule["apiGroups"] == [API.split("/")[0]] and rule["resources"] == [PLURAL]
    assert set(rule["verbs"]) == used
