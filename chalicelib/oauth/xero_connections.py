"""Xero's connections endpoint: which tenants a consent authorised (xero-reference §1.8)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from chalicelib.oauth.errors import UpstreamError
from chalicelib.oauth.xero_http import request

PRACTICE_MANAGER = "PRACTICEMANAGER"


class ConnectionsRateLimited(UpstreamError):
    """429 from ``/connections``: a tenantless call, so the app-wide minute ran out (§1.8, §2.1)."""

    def __init__(self, retry_after: int | None) -> None:
        super().__init__("Xero connections endpoint answered 429", status=503)
        self.retry_after = retry_after


@dataclass(frozen=True)
class XeroConnection:
    id: str
    auth_event_id: str
    tenant_id: str
    tenant_type: str
    tenant_name: str | None
    created_at: float
    updated_at: float


def parse_xero_timestamp(value: Any) -> float:
    """``2020-03-23T02:24:22.2328510``: UTC, no zone, up to 7 fractional digits (§1.8)."""
    if not isinstance(value, str) or not value:
        return 0.0
    text = value.rstrip("Z")
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def list_connections(
    api_url: str, access_token: str, auth_event_id: str | None = None
) -> list[XeroConnection]:
    params = {"authEventId": auth_event_id} if auth_event_id else None
    try:
        response = request(
            "GET",
            f"{api_url}/connections",
            params=params,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
    except requests.RequestException as exc:
        raise UpstreamError("Xero connections endpoint unreachable") from exc
    if response.status_code == 429:
        retry_after = response.headers.get("Retry-After", "")
        raise ConnectionsRateLimited(int(retry_after) if retry_after.isdigit() else None)
    if response.status_code != 200:
        raise UpstreamError(f"Xero connections endpoint answered {response.status_code}")
    try:
        rows = response.json()
    except ValueError as exc:
        raise UpstreamError("Xero connections endpoint sent invalid JSON") from exc
    if not isinstance(rows, list):
        raise UpstreamError("Xero connections endpoint sent an unexpected document")
    return [
        _connection(row) for row in rows if isinstance(row, dict) and row.get("tenantId") and row.get("id")
    ]


def delete_connection(api_url: str, access_token: str, connection_id: str) -> bool:
    """DELETE one connection: True when deleted, False when Xero no longer has it."""
    try:
        response = request(
            "DELETE",
            f"{api_url}/connections/{connection_id}",
            headers={"Authorization": f"Bearer {access_token}"},
        )
    except requests.RequestException as exc:
        raise UpstreamError("Xero connections endpoint unreachable") from exc
    if response.status_code in (200, 204):
        return True
    if response.status_code == 404:
        return False
    raise UpstreamError(f"Xero connection delete answered {response.status_code}")


def _connection(row: dict[str, Any]) -> XeroConnection:
    return XeroConnection(
        id=str(row["id"]),
        auth_event_id=str(row.get("authEventId") or ""),
        tenant_id=str(row["tenantId"]),
        tenant_type=str(row.get("tenantType") or ""),
        tenant_name=row.get("tenantName") if isinstance(row.get("tenantName"), str) else None,
        created_at=parse_xero_timestamp(row.get("createdDateUtc")),
        updated_at=parse_xero_timestamp(row.get("updatedDateUtc")),
    )


def choose_practice(
    this_consent: list[XeroConnection], all_connections: list[XeroConnection], preferred_tenant: str | None
) -> XeroConnection | None:
    """The XPM practice this consent bound (checklist A8), by a documented rule:

    1. PRACTICEMANAGER connections of *this* consent (``authEventId``); if none, because the
       practice was already connected and Xero grants nothing new (§1.8 gotcha), all of the
       user's PRACTICEMANAGER connections;
    2. among several, the most recently updated one: Xero stamps ``updatedDateUtc`` when a
       user (re)connects a tenant, so it is the practice just chosen (what xero-node does);
       on a tie, the tenant the connection already uses.
    """
    candidates = [c for c in this_consent if c.tenant_type == PRACTICE_MANAGER]
    if not candidates:
        candidates = [c for c in all_connections if c.tenant_type == PRACTICE_MANAGER]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.updated_at, c.tenant_id == preferred_tenant, c.created_at))
