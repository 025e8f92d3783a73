"""Shapes of the broker's answers (``total=False``: the broker may add fields over time)."""

from __future__ import annotations

from typing import Any, TypedDict


class ConnectSession(TypedDict, total=False):
    connect_url: str
    session_id: str
    expires_at: str


class Connection(TypedDict, total=False):
    tenant_ref: str
    status: str  # active | needs_reauthorisation | revoked
    xero_tenant_id: str
    practice_name: str | None
    authorised_by: dict[str, Any] | None
    scopes: list[str]
    connected_at: str | None
    last_refreshed_at: str | None
    refresh_token_expires_at: str | None
    next_rotation_at: str | None


class Client(TypedDict, total=False):
    uuid: str
    name: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    website: str | None
    business_structure: str | None
    date_of_birth: str | None
    tax_number: str | None  # masked ("***123") unless your vendor may see sensitive fields
    company_number: str | None
    is_archived: bool | None
    contacts: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    relationships: list[dict[str, Any]]


class PushAccepted(TypedDict):
    push_id: str
    status: str


class Push(TypedDict, total=False):
    push_id: str
    status: str  # queued | running | completed | failed
    records: list[dict[str, Any]]
    relationships: list[dict[str, Any]]
    error: str | None


class SyncAccepted(TypedDict, total=False):
    sync_id: str
    status: str
    started: bool


class SyncStatus(TypedDict, total=False):
    sync_id: str | None
    status: str  # not_started | queued | running | completed | failed ...
    synced: bool
    counts: dict[str, int]
    last_completed_at: str | None
    next_sync_at: str | None


class WebhookEndpoint(TypedDict, total=False):
    url: str | None
    event_types: list[str]
    status: str


class Event(TypedDict, total=False):
    id: str
    type: str
    timestamp: str
    data: dict[str, Any]
