"""Runtime subscriptions on Knative: a real hub (RabbitMQ broker, SQLite store) with
`knative.sources` on, driven through its admin API, keeps each runtime push subscription's
RabbitmqSource on a fake Kubernetes API server that validates every object against the CRD."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookhub.config import parse_config
from hookhub.errors import ConfigError
from hookhub.knative import rabbitmq_source, source_name
from hookhub.knative_sources import MANAGED_BY
from tests.admin.conftest import SECRET, Admin, admin_config, running_admin
from tests.broker._support import delete_namespace_queues
from tests.knative_schema import require_crds
from tests.support.fake_kube import FakeKube, running_fake_kube

URL = "http://127.0.0.1:9/hook"


def push(**settings: Any) -> dict[str, Any]:
    return {"url": URL, "types": ["com.test.#"], "secret": SECRET, **settings}


@contextlib.asynccontextmanager
async def knative_admin(
    tmp_path: Path, namespace: str, rabbitmq_url: str, kube: FakeKube, **knative: Any
) -> AsyncIterator[Admin]:
    settings = {"sources": True, "api_url": kube.url, "namespace": "hookhub", **knative}
    config = admin_config(tmp_path, namespace, broker=rabbitmq_url, knative=settings)
    try:
        async with running_admin(config) as admin:
            yield admin
    finally:
        await asyncio.to_thread(delete_namespace_queues, rabbitmq_url, namespace)


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    require_crds()
    async with running_fake_kube() as fake:
        yield fake


@pytest.fixture
async def admin(tmp_path: Path, namespace: str, rabbitmq_url: str, kube: FakeKube) -> AsyncIterator[Admin]:
    async with knative_admin(
        tmp_path, namespace, rabbitmq_url, kube, rabbitmq_cluster="mq/rabbit"
    ) as running:
        yield running


async def create(admin: Admin, name: str, status: int = 201, **body: Any) -> dict[str, Any]:
    response = await admin.client.post("/admin/subscriptions", json={"name": name, **body})
    assert response.status_code == status, response.text
    return dict(response.json())


@pytest.mark.rabbitmq
async def test_created_changed_and_deleted_with_its_source(admin: Admin, kube: FakeKube) -> None:
    name = "Crm_Hooks"  # not a DNS label: the source gets a converted, hashed name
    await create(admin, name, **push(max_in_flight=40))
    resource = source_name(name)
    assert resource.startswith("sub-crm-hooks-") and set(kube.objects) == {resource}
    stored = kube.objects[resource]
    # the very object `hookhub render knative` would write for it, plus the admin's label
    config = admin.hub.config.model_copy(
        update={"subscriptions": {name: admin.hub.registry.get(name).config}}
    )
    expected = rabbitmq_source(config, name, namespace="hookhub", rabbitmq_cluster="mq/rabbit")
    expected["metadata"]["labels"][MANAGED_BY[0]] = MANAGED_BY[1]
    assert {k: v for k, v in stored.items() if k != "metadata"} == {
        k: v for k, v in expected.items() if k != "metadata"
    }
    assert stored["metadata"]["labels"] == expected["metadata"]["labels"]
    assert stored["metadata"]["annotations"] == {"hookhub.dev/subscription": name}
    resources = stored["spec"]["rabbitmqResourcesConfig"]
    assert resources["queueName"] == admin.hub.queue_of(name) and resources["parallelism"] == 40
    assert stored["spec"]["rabbitmqClusterReference"] == {"name": "rabbit", "namespace": "mq"}

    response = await admin.client.patch(f"/admin/subscriptions/{name}", json={"max_in_flight": 5000})
    assert response.status_code == 200, response.text
    assert kube.objects[resource]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 1000  # the CRD's max
    writes = len(kube.writes())
    response = await admin.client.patch(f"/admin/subscriptions/{name}", json={"url": "http://127.0.0.1:9/b"})
    assert response.status_code == 200, response.text
    assert len(kube.writes()) == writes  # the source does not depend on the URL: left alone

    response = await admin.client.delete(f"/admin/subscriptions/{name}")
    assert response.status_code == 204, response.text
    assert kube.objects == {}


@pytest.mark.rabbitmq
async def test_pull_and_file_subscriptions_get_no_source_from_the_admin(admin: Admin, kube: FakeKube) -> None:
    await create(admin, "puller", mode="pull", types=["com.test.#"], token="pull-token")
    response = await admin.client.delete("/admin/subscriptions/puller")
    assert response.status_code == 204, response.text
    assert kube.objects == {} and kube.writes() == []  # the file one is GitOps' (rendered)


@pytest.mark.rabbitmq
async def test_api_unavailable_leaves_every_subscription_as_it_was(admin: Admin, kube: FakeKube) -> None:
    await create(admin, "crm", **push(max_in_flight=3))
    kube.unavailable = True

    body = await create(admin, "erp", 503, **push())
    assert "RabbitmqSource sub-erp" in body["error"] and "retry later" in body["error"]
    assert (await admin.client.get("/admin/subscriptions/erp")).status_code == 404
    queues = {info.name for info in await admin.hub.broker.describe([admin.hub.queue_of("erp")])}
    assert admin.hub.queue_of("erp") not in queues  # its queue went with it

    response = await admin.client.patch("/admin/subscriptions/crm", json={"max_in_flight": 9})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    shown = (await admin.client.get("/admin/subscriptions/crm")).json()
    assert shown["max_in_flight"] == 3

    response = await admin.client.delete("/admin/subscriptions/crm")
    assert response.status_code == 503, response.text
    assert (await admin.client.get("/admin/subscriptions/crm")).status_code == 200

    kube.unavailable = False
    assert set(kube.objects) == {"sub-crm"}
    assert kube.objects["sub-crm"]["spec"]["rabbitmqResourcesConfig"]["parallelism"] == 3


@pytest.mark.rabbitmq
async def test_an_object_the_cluster_refuses_is_a_clear_502_and_no_subscription(
    tmp_path: Path, namespace: str, rabbitmq_url: str
) -> None:
    """A cluster running an eventing-rabbitmq whose CRD lacks `parallelism` refuses the source."""
    crds = tmp_path / "crds"
    crds.mkdir()
    crd = yaml.safe_load((require_crds() / "rabbitmqsource.yaml").read_text(encoding="utf-8"))
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        del spec["properties"]["rabbitmqResourcesConfig"]["properties"]["parallelism"]
    (crds / "rabbitmqsource.yaml").write_text(yaml.safe_dump(crd), encoding="utf-8")
    async with (
        running_fake_kube(crd_dir=crds) as kube,
        knative_admin(tmp_path, namespace, rabbitmq_url, kube) as admin,
    ):
        body = await create(admin, "crm", 502, **push())
        assert "refused RabbitmqSource sub-crm" in body["error"] and "parallelism" in body["error"]
        assert (await admin.client.get("/admin/subscriptions/crm")).status_code == 404
        assert kube.objects == {}


@pytest.mark.rabbitmq
async def test_a_start_reconciles_the_sources_it_owns_and_nothing_else(
    tmp_path: Path, namespace: str, rabbitmq_url: str, kube: FakeKube
) -> None:
    # subscriptions created while sources were off (or whose source was lost)
    config = admin_config(tmp_path, namespace, broker=rabbitmq_url)
    async with running_admin(config) as admin:
        await create(admin, "crm", **push())
        await create(admin, "puller", mode="pull", types=["com.test.#"], token="pull-token")
    kube.put(
        {
            "apiVersion": "sources.knative.dev/v1alpha1",
            "kind": "RabbitmqSource",
            "metadata": {"name": "sub-gone", "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
            "spec": {},
        }
    )
    gitops = copy.deepcopy(kube.put({**kube.objects["sub-gone"], "metadata": {"name": "sub-filesub"}}))
    async with knative_admin(tmp_path, namespace, rabbitmq_url, kube):
        for _ in range(200):
            if set(kube.objects) == {"sub-crm", "sub-filesub"}:
                break
            await asyncio.sleep(0.02)
    assert set(kube.objects) == {"sub-crm", "sub-filesub"}
    assert kube.objects["sub-filesub"] == gitops  # a rendered (GitOps) source is not the admin's


@pytest.mark.rabbitmq
async def test_an_unreachable_api_at_start_does_not_stop_the_hub(
    tmp_path: Path, namespace: str, rabbitmq_url: str, kube: FakeKube
) -> None:
    kube.unavailable = True
    async with knative_admin(tmp_path, namespace, rabbitmq_url, kube) as admin:
        response = await admin.client.get("/admin/subscriptions")
        assert response.status_code == 200, response.text


def test_sources_need_a_rabbitmq_broker_and_turn_on_from_the_environment(tmp_path: Path) -> None:
    base = admin_config(tmp_path, "ns", broker="memory://")
    with pytest.raises(ConfigError, match=r"knative\.sources: RabbitmqSources consume RabbitMQ queues"):
        parse_config({**base, "knative": {"sources": True}}, environ={})
    amqp = {**base, "broker": "amqp://guest:guest@127.0.0.1:5672/", "knative": {"namespace": "hooks"}}
    config = parse_config(amqp, environ={"HOOKHUB_KNATIVE_SOURCES": "true"})
    assert config.knative.sources and config.knative.namespace == "hooks"
    assert not parse_config(amqp, environ={}).knative.sources
    with pytest.raises(ConfigError, match=r"knative\.namespace"):
        parse_config({**amqp, "knative": {"namespace": "Not_A_Label"}}, environ={})


async def test_the_registry_undoes_a_change_its_follower_refuses(tmp_path: Path, namespace: str) -> None:
    """The hook itself, on the memory broker: what `follow` refuses is not kept, a deletion it
    refuses is not started, and a change it needs no part of (a secret rotation) never calls it."""
    seen: list[tuple[str, Any, Any]] = []
    refuse = False

    async def follow(name: str, before: Any, after: Any) -> None:
        seen.append((name, before and before.max_in_flight, after and after.max_in_flight))
        if refuse:
            raise ValueError("refused by the follower")

    async with running_admin(admin_config(tmp_path, namespace)) as admin:
        admin.hub.registry.follow = follow
        await create(admin, "crm", **push(max_in_flight=3))
        refuse = True
        assert (await create(admin, "erp", 422, **push()))["error"] == "refused by the follower"
        assert "erp" not in admin.hub.registry.current()
        assert (await admin.client.get("/admin/subscriptions/erp")).status_code == 404
        response = await admin.client.patch("/admin/subscriptions/crm", json={"max_in_flight": 8})
        assert response.status_code == 422
        assert (await admin.client.get("/admin/subscriptions/crm")).json()["max_in_flight"] == 3
        assert (await admin.client.delete("/admin/subscriptions/crm")).status_code == 422
        rotated = await admin.client.post("/admin/subscriptions/crm/rotate-secret", json={})
        assert rotated.status_code == 200, rotated.text
        refuse = False
        assert (await admin.client.delete("/admin/subscriptions/crm")).status_code == 204
    assert seen == [("crm", None, 3), ("erp", None, 16), ("crm", 3, 8), ("crm", 3, None), ("crm", 3, None)]
