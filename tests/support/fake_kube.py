"""A fake Kubernetes API server on 127.0.0.1 for the custom resources the hub manages.

It answers the REST verbs the way the API server does for a namespaced custom resource: 201 on a
create, 409 AlreadyExists on a second one, 404 on a missing object, 409 Conflict on a replace
with a stale resourceVersion, 422 Invalid on an object the CRD's schema refuses. Validation is the
strict one of tests/knative_schema.py (an unknown field is an error, not pruned) plus what
eventing-rabbitmq's admission webhook checks and the schema does not (ISO-8601 delays), so an
object the hub builds wrong fails here as it would in a cluster, or more strictly.

    async with running_fake_kube() as kube:
        ...point the hub's knative.api_url at kube.url...
        kube.objects["sub-crm"]["spec"]
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.knative_schema import CRD_DIR, validation_errors

KINDS = {("sources.knative.dev", "v1alpha1", "rabbitmqsources"): "RabbitmqSource"}
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ISO_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


@dataclass
class Call:
    method: str
    path: str


@dataclass
class FakeKube:
    """The server's state: objects by name (one resource type, one namespace), every call, and
    switches a test flips to make it misbehave."""

    namespace: str = "hookhub"
    token: str | None = None  # when set, every request must carry it
    crd_dir: Path = CRD_DIR
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    unavailable: bool = False  # answer 503 to everything
    conflicts: int = 0  # the next N replaces meet a newer resourceVersion (another writer)
    port: int = 0
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("POST", "PUT", "DELETE")]

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if someone else (GitOps, an operator) had applied it."""
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[stored["metadata"]["name"]] = stored
        return stored

    # the API ------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        collection = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"
        return Starlette(
            routes=[
                Route(collection, self._collection, methods=["GET", "POST"]),
                Route(collection + "/{name}", self._item, methods=["GET", "PUT", "DELETE"]),
            ]
        )

    def _refusal(self, request: Request) -> JSONResponse | None:
        self.calls.append(Call(request.method, request.url.path))
        if self.unavailable:
            return status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        p = request.path_params
        if (p["group"], p["version"], p["plural"]) not in KINDS or p["namespace"] != self.namespace:
            return status(404, "NotFound", "the server could not find the requested resource")
        return None

    async def _collection(self, request: Request) -> JSONResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        if request.method == "GET":
            selector = dict(
                part.split("=", 1)
                for part in request.query_params.get("labelSelector", "").split(",")
                if part
            )
            items = [
                obj
                for obj in self.objects.values()
                if all(obj["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            ]
            return JSONResponse({"kind": "List", "apiVersion": "v1", "items": items})
        obj = await request.json()
        if (invalid := self._invalid(request, obj)) is not None:
            return invalid
        name = obj["metadata"]["name"]
        if name in self.objects:
            return status(409, "AlreadyExists", f'{obj["kind"]} "{name}" already exists')
        return JSONResponse(self.put(obj), 201)

    async def _item(self, request: Request) -> JSONResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        name = request.path_params["name"]
        current = self.objects.get(name)
        if current is None:
            return status(404, "NotFound", f'"{name}" not found')
        if request.method == "GET":
            return JSONResponse(current)
        if request.method == "DELETE":
            del self.objects[name]
            return status(200, "Success", "deleted")
        obj = await request.json()
        if (invalid := self._invalid(request, obj)) is not None:
            return invalid
        if obj["metadata"]["name"] != name:
            return status(400, "BadRequest", "the name of the object does not match the name on the URL")
        version = obj["metadata"].get("resourceVersion")
        if not version:
            return status(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified")
        if self.conflicts > 0:
            self.conflicts -= 1
            current["metadata"]["resourceVersion"] = str(next(self._versions))
        if version != current["metadata"]["resourceVersion"]:
            return status(409, "Conflict", "the object has been modified; please apply your changes")
        return JSONResponse(self.put(obj))

    def _invalid(self, request: Request, obj: Any) -> JSONResponse | None:
        """422 with every problem, as the API server words a refused object."""
        p = request.path_params
        kind = KINDS[(p["group"], p["version"], p["plural"])]
        if not isinstance(obj, dict) or obj.get("kind") != kind:
            return status(400, "BadRequest", f"the body is not a {kind}")
        if obj.get("apiVersion") != f"{p['group']}/{p['version']}":
            return status(400, "BadRequest", "apiVersion does not match the URL")
        meta = obj.setdefault("metadata", {})
        if meta.setdefault("namespace", self.namespace) != self.namespace:
            return status(400, "BadRequest", "the namespace of the object does not match the URL")
        checked = copy.deepcopy(obj)
        for key in SERVER_FIELDS:
            checked["metadata"].pop(key, None)
        problems = validation_errors(checked, self.crd_dir)
        name = str(meta.get("name", ""))
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
        delay = (obj.get("spec") or {}).get("delivery", {}).get("backoffDelay")
        if delay is not None and not _ISO_DURATION.match(str(delay)):
            problems.append(f"spec.delivery.backoffDelay: Invalid value: {delay!r}: not an ISO 8601 duration")
        if problems:
            return status(422, "Invalid", f'{kind} "{name}" is invalid: ' + "; ".join(problems))
        return None


def status(code: int, reason: str, message: str) -> JSONResponse:
    """A `Status` object, the body of every Kubernetes error."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    return JSONResponse({**body, "reason": reason, "code": code}, code)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_fake_kube(**settings: Any) -> AsyncIterator[FakeKube]:
    """The fake server on a free port of 127.0.0.1, served from the test's own event loop."""
    import asyncio

    kube = FakeKube(**settings)
    kube.port = free_port()
    config = uvicorn.Config(kube.app(), host="127.0.0.1", port=kube.port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield kube
    finally:
        server.should_exit = True
        await task
