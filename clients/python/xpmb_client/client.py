"""The vendor API of xpm-broker, one typed method per endpoint (contract.md §4).

Every ``/v1`` call is signed with RFC 9421 HTTP Message Signatures (hmac-sha256, a fresh
nonce each time) by ``requests-http-signature``; a JSON body also gets its ``Content-Digest``.
Errors come back as :class:`BrokerError` carrying the problem ``code``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import quote

import requests
from requests_http_signature import HTTPSignatureAuth, algorithms

from xpmb_client.errors import BrokerError, RateLimitedError
from xpmb_client.types import (
    Client,
    Connection,
    ConnectSession,
    Event,
    Push,
    PushAccepted,
    SyncAccepted,
    SyncStatus,
    WebhookEndpoint,
)

DEFAULT_TIMEOUT = 30.0
FINISHED_PUSH = frozenset({"completed", "failed"})


def _segment(value: str) -> str:
    return quote(value, safe="")


class XpmBroker:
    """A signed session against one broker for one vendor key.

    >>> broker = XpmBroker("http://127.0.0.1:8000", key_id="key_…", key_secret="…")
    >>> broker.search_clients("acme-customer-42", "Bloggs")
    """

    def __init__(
        self,
        base_url: str,
        key_id: str,
        key_secret: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()
        self._auth = HTTPSignatureAuth(
            key=key_secret.encode(),
            key_id=key_id,
            signature_algorithm=algorithms.HMAC_SHA256,
            use_nonce=True,
        )

    # -- transport -----------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        signed: bool = True,
    ) -> requests.Response:
        """Send one call; raises :class:`BrokerError` for any 4xx/5xx answer."""
        sent_headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent_headers["Content-Type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._session.request(
            method,
            self.base_url + path,
            params=query,
            data=data,
            headers=sent_headers,
            auth=self._auth if signed else None,
            timeout=self.timeout,
            allow_redirects=False,
        )
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = self._json("GET", path, params={**params, "cursor": cursor})
            yield from page.get(key) or []
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # -- unsigned ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/health", signed=False)
        return result

    def openapi(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/openapi.json", signed=False)
        return result

    # -- tenants and connections ---------------------------------------------------------
    def create_connect_session(
        self,
        tenant_ref: str,
        return_url: str,
        *,
        mode: str = "connect",
        allow_practice_change: bool = False,
        user: dict[str, Any] | None = None,
    ) -> ConnectSession:
        """Start "Connect to Xero" for your customer ``tenant_ref``; send the user to ``connect_url``."""
        body: dict[str, Any] = {
            "return_url": return_url,
            "mode": mode,
            "allow_practice_change": allow_practice_change,
        }
        if user is not None:
            body["user"] = user
        result: ConnectSession = self._json(
            "POST", f"/v1/tenants/{_segment(tenant_ref)}/connect-sessions", body=body
        )
        return result

    def get_connection(self, tenant_ref: str) -> Connection:
        result: Connection = self._json("GET", f"/v1/tenants/{_segment(tenant_ref)}/connection")
        return result

    def disconnect(self, tenant_ref: str) -> None:
        self.request("DELETE", f"/v1/tenants/{_segment(tenant_ref)}/connection")

    def iter_tenants(
        self, *, status: str | None = None, page_size: int | None = None
    ) -> Iterator[Connection]:
        """Every tenant of this vendor, following ``next_cursor`` page by page."""
        pages = self._pages("/v1/tenants", "tenants", {"status": status, "limit": page_size})
        return cast(Iterator[Connection], pages)

    # -- XPM -----------------------------------------------------------------------------
    def search_clients(self, tenant_ref: str, text: str) -> list[Client]:
        """Live XPM search (``text`` ≥ 3 characters)."""
        page = self._json("GET", f"/v1/tenants/{_segment(tenant_ref)}/xpm/clients", params={"search": text})
        clients: list[Client] = page["clients"]
        return clients

    def iter_clients(
        self, tenant_ref: str, *, updated_since: str | None = None, page_size: int | None = None
    ) -> Iterator[Client]:
        """The synced client list (the change feed's snapshot), page by page."""
        path = f"/v1/tenants/{_segment(tenant_ref)}/xpm/clients"
        pages = self._pages(path, "clients", {"updated_since": updated_since, "limit": page_size})
        return cast(Iterator[Client], pages)

    def get_client(self, tenant_ref: str, client_uuid: str) -> Client:
        path = f"/v1/tenants/{_segment(tenant_ref)}/xpm/clients/{_segment(client_uuid)}"
        result: Client = self._json("GET", path)
        return result

    def create_client(
        self, tenant_ref: str, client: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Client:
        """Create one client (with optional ``relationships``); safe to retry with the same key."""
        result: Client = self._json(
            "POST",
            f"/v1/tenants/{_segment(tenant_ref)}/xpm/clients",
            body=client,
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
        )
        return result

    def create_push(
        self, tenant_ref: str, graph: dict[str, Any], *, idempotency_key: str | None = None
    ) -> PushAccepted:
        """Queue an entity graph (entity, parties, relationships) as a push job."""
        result: PushAccepted = self._json(
            "POST",
            f"/v1/tenants/{_segment(tenant_ref)}/xpm/pushes",
            body=graph,
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
        )
        return result

    def get_push(self, tenant_ref: str, push_id: str) -> Push:
        path = f"/v1/tenants/{_segment(tenant_ref)}/xpm/pushes/{_segment(push_id)}"
        result: Push = self._json("GET", path)
        return result

    def wait_for_push(
        self, tenant_ref: str, push_id: str, *, timeout: float = 120.0, interval: float = 0.5
    ) -> Push:
        """Poll until the job is ``completed`` or ``failed`` (webhooks tell you too)."""
        deadline = time.monotonic() + timeout
        while True:
            push = self.get_push(tenant_ref, push_id)
            if push["status"] in FINISHED_PUSH:
                return push
            if time.monotonic() > deadline:
                raise TimeoutError(f"push {push_id} still {push['status']} after {timeout} s")
            time.sleep(interval)

    def start_sync(self, tenant_ref: str) -> SyncAccepted:
        """Ask for a change-feed sync of this practice now (202)."""
        result: SyncAccepted = self._json("POST", f"/v1/tenants/{_segment(tenant_ref)}/xpm/sync")
        return result

    def get_sync(self, tenant_ref: str) -> SyncStatus:
        """The practice's current or last sync; ``synced`` says whether the list is complete."""
        result: SyncStatus = self._json("GET", f"/v1/tenants/{_segment(tenant_ref)}/xpm/sync")
        return result

    def wait_for_sync(self, tenant_ref: str, *, timeout: float = 300.0, interval: float = 1.0) -> SyncStatus:
        """Poll until the practice's synced list is complete (``synced``) and no sync runs."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_sync(tenant_ref)
            if status.get("synced") and status.get("status") not in {"queued", "running"}:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"sync of {tenant_ref} still {status.get('status')} after {timeout} s")
            time.sleep(interval)

    # -- webhooks and events -------------------------------------------------------------
    def get_webhook_endpoint(self) -> WebhookEndpoint:
        result: WebhookEndpoint = self._json("GET", "/v1/webhook-endpoint")
        return result

    def set_webhook_endpoint(self, url: str, event_types: list[str] | None = None) -> WebhookEndpoint:
        body: dict[str, Any] = {"url": url}
        if event_types is not None:
            body["event_types"] = event_types
        result: WebhookEndpoint = self._json("PUT", "/v1/webhook-endpoint", body=body)
        return result

    def rotate_webhook_secret(self) -> dict[str, Any]:
        """A new ``whsec_…`` secret; the old one keeps verifying during the grace period."""
        result: dict[str, Any] = self._json("POST", "/v1/webhook-endpoint/secret:rotate")
        return result

    def iter_events(self, *, after: str | None = None, page_size: int | None = None) -> Iterator[Event]:
        """The durable event log, oldest first, from just after the event id ``after``."""
        cursor = after
        while True:
            page = self._json("GET", "/v1/events", params={"after": cursor, "limit": page_size})
            events: list[Event] = page.get("events") or []
            yield from events
            if not page.get("has_more"):
                return
            cursor = page["next_after"]

    def redeliver_event(self, event_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/v1/events/{_segment(event_id)}/redeliver")
        return result


def _error_from(response: requests.Response) -> BrokerError:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    problem.setdefault("status", response.status_code)
    request_id = response.headers.get("X-Request-Id")
    if response.status_code == 429:
        retry_after = response.headers.get("Retry-After")
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return RateLimitedError(response.status_code, problem, request_id, seconds)
    return BrokerError(response.status_code, problem, request_id)
