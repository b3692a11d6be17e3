"""A small async Kubernetes API client: the few verbs the admin function needs for RabbitmqSources.

Why httpx and not a Kubernetes client library: the hub needs create-or-replace, delete and a
labelled list on one namespaced custom resource, which are three REST paths. The official
`kubernetes` client is synchronous (every call would block the event loop or need a thread) and
large; `kubernetes_asyncio` is async but brings aiohttp sessions, generated models for every
API group and its own config loaders, none of which a custom resource needs. httpx is already the
hub's HTTP client, so this module adds no dependency and stays readable.

In a pod it authenticates as its ServiceAccount: the token file is read again on every request,
because the kubelet rotates projected tokens, and the API server's certificate is checked against
the mounted `ca.crt`. `base_url` and `token` can be given instead, for `kubectl proxy` and tests.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_TIMEOUT = 10.0
REPLACE_ATTEMPTS = 3  # a replace that meets a newer resourceVersion reads and tries again


class KubeError(Exception):
    """The API server refused a request (a 4xx other than those a verb handles itself)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API answered {status}: {message}")
        self.status = status
        self.message = message


class KubeUnavailable(Exception):
    """The API server could not be reached, timed out or answered 5xx/429: retry later."""


def resource_path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    """`/api/v1/...` for the core group, `/apis/<group>/<version>/...` for the others."""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def plural_of(kind: str) -> str:
    """The resource name Kubernetes derives from a kind (RabbitmqSource -> rabbitmqsources)."""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith(("s", "x", "ch", "sh")) else "s")


class KubeClient:
    def __init__(
        self,
        base_url: str,
        namespace: str,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.namespace = namespace
        self.token = token
        self.token_file = token_file
        self._http = httpx.AsyncClient(base_url=base_url, verify=verify, timeout=timeout)

    @classmethod
    def in_cluster(
        cls,
        *,
        api_url: str | None = None,
        namespace: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        account: Path = SERVICE_ACCOUNT,
        environ: dict[str, str] | None = None,
    ) -> KubeClient:
        """The pod's own API server, ServiceAccount and namespace, each overridable; ValueError
        names what is missing outside a pod."""
        env = os.environ if environ is None else environ
        if api_url is None:
            host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ValueError(
                    "not in a Kubernetes pod (KUBERNETES_SERVICE_HOST unset): set knative.api_url"
                )
            api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        if namespace is None:
            try:
                namespace = (account / "namespace").read_text(encoding="utf-8").strip()
            except OSError:
                raise ValueError(f"no namespace given and none in {account / 'namespace'}") from None
        ca = account / "ca.crt"
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else True
        token_file = account / "token"
        return cls(
            api_url,
            namespace,
            token_file=token_file if token_file.is_file() else None,
            verify=verify,
            timeout=timeout,
        )

    def _headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file is not None:
            token = self.token_file.read_text(encoding="utf-8").strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, headers=self._headers(), **kwargs)
        except (httpx.TransportError, OSError) as exc:
            raise KubeUnavailable(f"Kubernetes API unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise KubeUnavailable(f"Kubernetes API answered {response.status_code}: {_message(response)}")
        return response

    async def get(self, api_version: str, plural: str, name: str) -> dict[str, Any] | None:
        response = await self._request("GET", resource_path(api_version, plural, self.namespace, name))
        if response.status_code == 404:
            return None
        return _ok(response)

    async def list(self, api_version: str, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else {}
        response = await self._request(
            "GET", resource_path(api_version, plural, self.namespace), params=params
        )
        return list(_ok(response).get("items") or [])

    async def apply(self, obj: dict[str, Any], plural: str | None = None) -> dict[str, Any]:
        """Create `obj`, or replace the existing object of that name (its resourceVersion kept,
        as a PUT requires); the object as the server stored it."""
        api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
        plural = plural or plural_of(kind)
        namespace = obj["metadata"].get("namespace") or self.namespace
        if namespace != self.namespace:
            raise ValueError(
                f"{kind}/{name}: namespace {namespace!r}, but this client works in {self.namespace!r}"
            )
        collection = resource_path(api_version, plural, namespace)
        created = await self._request("POST", collection, json=obj)
        if created.status_code != 409:
            return _ok(created)
        for _ in range(REPLACE_ATTEMPTS):
            current = await self.get(api_version, plural, name)
            if current is None:  # deleted meanwhile: create it after all
                return _ok(await self._request("POST", collection, json=obj))
            version = current.get("metadata", {}).get("resourceVersion")
            replacement = {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}
            replaced = await self._request(
                "PUT", resource_path(api_version, plural, namespace, name), json=replacement
            )
            if replaced.status_code != 409:
                return _ok(replaced)
            log.info("%s/%s changed while being replaced; reading it again", kind, name)
        raise KubeError(409, f"{kind}/{name} kept changing while being replaced")

    async def delete(self, api_version: str, plural: str, name: str) -> bool:
        """Delete one object; false when it was already gone."""
        response = await self._request("DELETE", resource_path(api_version, plural, self.namespace, name))
        if response.status_code == 404:
            return False
        _ok(response)
        return True

    async def close(self) -> None:
        await self._http.aclose()


def _message(response: httpx.Response) -> str:
    """The `message` of a Kubernetes Status body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:1000]
    return response.text[:300]


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise KubeError(response.status_code, _message(response))
    body = response.json()
    return body if isinstance(body, dict) else {}
