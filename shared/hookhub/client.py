"""A client of the hub's admin API, so operators' commands work against any hub they can reach
(local or on Knative) and never touch its broker or store directly.

Every method returns the parsed JSON of the answer; anything but a 2xx, and any transport
failure, raises `AdminError` with a message fit to show an operator as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class AdminError(Exception):
    """The hub refused a request or could not be reached (`status` None: no HTTP answer)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _segment(value: str) -> str:
    """A path segment, escaped so a name or id cannot change the route it names."""
    return quote(value, safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]:
        return str(body["error"])
    if isinstance(body, dict) and "detail" in body:  # a framework-made error that slipped through
        return str(body["detail"])
    text = response.text.strip()
    return text[:500] if text else f"HTTP {response.status_code} {response.reason_phrase}".strip()


class AdminClient:
    """One method per admin operation (see SPEC.md, "Operations")."""

    def __init__(self, url: str, token: str | None, timeout: float = 10) -> None:
        self.url = url.rstrip("/") or DEFAULT_URL
        headers = {"Accept": "application/json", "User-Agent": "hookhub-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._token = token
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> dict[str, Any]:
        try:
            response = self._http.request(
                method, f"/admin{path}", params=params, json=body if body is not None else None
            )
        except httpx.ConnectError as exc:
            raise AdminError(
                None, f"cannot reach the hub at {self.url}: {exc or 'connection failed'}"
            ) from None
        except httpx.TimeoutException:
            raise AdminError(
                None, f"the hub at {self.url} did not answer within {self._timeout:g}s"
            ) from None
        except httpx.InvalidURL as exc:
            raise AdminError(None, f"invalid hub URL {self.url!r}: {exc}") from None
        except httpx.HTTPError as exc:
            raise AdminError(None, f"request to the hub at {self.url} failed: {exc}") from None
        if not response.is_success:
            message = _error_message(response)
            if response.status_code == 401 and not self._token:
                message += " (no admin token given: set HOOKHUB_ADMIN_TOKEN or pass --token)"
            raise AdminError(response.status_code, message)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise AdminError(
                response.status_code, f"{self.url} answered {method} /admin{path} with no JSON object"
            )
        return answer

    # subscriptions
    def list_subscriptions(self) -> dict[str, Any]:
        return self._request("GET", "/subscriptions")

    def get_subscription(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/subscriptions/{_segment(name)}")

    def create_subscription(self, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/subscriptions", body={"name": name, **fields})

    def update_subscription(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("PATCH", f"/subscriptions/{_segment(name)}", body=dict(changes))

    def delete_subscription(self, name: str) -> None:
        self._request("DELETE", f"/subscriptions/{_segment(name)}")

    def rotate_secret(
        self, name: str, secret: str | None = None, overlap: str | None = None
    ) -> dict[str, Any]:
        body = _params(secret=secret, overlap=overlap)
        return self._request("POST", f"/subscriptions/{_segment(name)}/rotate-secret", body=body)

    def pause(self, name: str, reason: str | None = None) -> dict[str, Any]:
        body = _params(reason=reason)
        return self._request("POST", f"/subscriptions/{_segment(name)}/pause", body=body)

    def resume(self, name: str) -> dict[str, Any]:
        return self._request("POST", f"/subscriptions/{_segment(name)}/resume")

    # dead letters
    def dead_letters(
        self,
        subscription: str | None = None,
        type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = _params(
            subscription=subscription, type=type, since=since, until=until, limit=limit, cursor=cursor
        )
        return self._request("GET", "/dead-letters", params=params)

    def dead_letter(self, delivery_id: str) -> dict[str, Any]:
        return self._request("GET", f"/dead-letters/{_segment(delivery_id)}")

    def replay_dead_letters(self, selector: Mapping[str, Any]) -> dict[str, Any]:
        """`selector`: {"delivery_ids": [...]} or {"subscription", optional "type", "since", "until"}."""
        return self._request("POST", "/dead-letters/replay", body=dict(selector))

    def purge_dead_letters(self, selector: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/dead-letters/purge", body=dict(selector))

    # interval resends
    def create_replay(self, subscription: str, start: str, end: str, dry_run: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"subscription": subscription, "from": start, "to": end}
        if dry_run:
            body["dry_run"] = True
        return self._request("POST", "/replays", body=body)

    def replays(self, subscription: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return self._request("GET", "/replays", params=_params(subscription=subscription, limit=limit))

    def replay(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/replays/{_segment(job_id)}")

    def cancel_replay(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/replays/{_segment(job_id)}")

    # observation
    def trace(self, event_id: str) -> dict[str, Any]:
        return self._request("GET", f"/events/{_segment(event_id)}")

    def trace_correlation(self, correlation_id: str) -> dict[str, Any]:
        return self._request("GET", "/events", params={"correlation_id": correlation_id})

    def broker(self) -> dict[str, Any]:
        return self._request("GET", "/broker")

    def rejections(self, provider: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return self._request("GET", "/rejections", params=_params(provider=provider, limit=limit))

    def event_types(self, provider: str | None = None) -> dict[str, Any]:
        return self._request("GET", "/event-types", params=_params(provider=provider))


def selector(
    delivery_ids: Sequence[str] = (),
    subscription: str | None = None,
    type: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """The dead-letter selector body for replay and purge: ids, or a subscription and filters."""
    if delivery_ids:
        return {"delivery_ids": list(delivery_ids)}
    return _params(subscription=subscription, type=type, since=since, until=until)
