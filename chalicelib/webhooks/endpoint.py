"""A vendor's webhook endpoint: URL, event types, status and signing secrets (contract.md §4, §6).

One endpoint per vendor, stored on the Vendor row next to the secret created with the vendor.
Secret rotation keeps the old secret for a grace period (``XPMB_WEBHOOK_SECRET_GRACE_HOURS``,
default 24) during which deliveries carry both signatures (checklist E2). An endpoint is
disabled by a 410 answer or by failing for a whole retry window (``delivery.py``); ``PUT``
re-enables it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.audit import audit_record
from chalicelib.config import get_settings
from chalicelib.crypto import get_cipher
from chalicelib.errors import BrokerError
from chalicelib.oauth.sessions import invalid_request
from chalicelib.storage import StorageUnavailable, is_conditional_failure, transaction
from chalicelib.tenants.connections import iso
from chalicelib.tenants.models import Vendor
from chalicelib.tenants.urls import check_webhook_url
from chalicelib.tenants.vendors import new_webhook_secret, vendor_context
from chalicelib.webhooks.models import EVENT_TYPES

logger = logging.getLogger("xpmb.webhooks")
SECRET_PURPOSE = "webhook-secret"
DEFAULT_GRACE_HOURS = 24.0
ENDPOINT_FIELDS = frozenset({"url", "event_types"})


def grace_seconds() -> float:
    return float(os.environ.get("XPMB_WEBHOOK_SECRET_GRACE_HOURS") or DEFAULT_GRACE_HOURS) * 3600


def is_disabled(vendor: Vendor) -> bool:
    return vendor.webhook_disabled_at is not None


def subscribes_to(vendor: Vendor, event_type: str) -> bool:
    return vendor.webhook_event_types is None or event_type in vendor.webhook_event_types


def endpoint_view(vendor: Vendor, now: float | None = None) -> dict[str, Any]:
    """What ``GET /v1/webhook-endpoint`` shows: never a secret."""
    at = time.time() if now is None else now
    status = "disabled" if is_disabled(vendor) else "active"
    if not vendor.webhook_url:
        status = "not_configured"
    previous_until = vendor.webhook_previous_secret_expires_at
    previous_active = bool(vendor.webhook_previous_secret_ct and previous_until and previous_until > at)
    return {
        "url": vendor.webhook_url,
        "event_types": sorted(vendor.webhook_event_types or EVENT_TYPES),
        "status": status,
        "disabled_at": iso(vendor.webhook_disabled_at),
        "disabled_reason": vendor.webhook_disabled_reason,
        "failing_since": iso(vendor.webhook_failing_since),
        "secret_rotation": {
            "rotated_at": iso(vendor.webhook_secret_rotated_at),
            "previous_secret_active": previous_active,
            "previous_secret_expires_at": iso(previous_until) if previous_active else None,
        },
    }


def parse_endpoint_body(body: Any) -> tuple[str, list[str] | None]:
    if not isinstance(body, dict):
        raise invalid_request("The body must be a JSON object.")
    unknown = sorted(set(body) - ENDPOINT_FIELDS)
    if unknown:
        raise invalid_request(f"Unknown field {unknown[0]!r}.", unknown[0])
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise invalid_request("url is required: the https URL to POST webhooks to.", "url")
    types = body.get("event_types")
    if types is None:
        return url, None
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise invalid_request("event_types must be a non-empty list of event type names.", "event_types")
    unknown_types = sorted(set(types) - EVENT_TYPES)
    if unknown_types:
        raise invalid_request(f"Unknown event type {unknown_types[0]!r}.", "event_types")
    chosen = sorted(set(types))
    return url, None if set(chosen) == EVENT_TYPES else chosen


def configure_endpoint(vendor: Vendor, body: Any, actor: str, now: float | None = None) -> dict[str, Any]:
    """``PUT /v1/webhook-endpoint``: set URL and event types; a disabled endpoint is re-enabled."""
    at = time.time() if now is None else now
    url, types = parse_endpoint_body(body)
    check_webhook_url(url, "url", local_stage=get_settings().is_local)
    actions = [
        Vendor.webhook_url.set(url),
        Vendor.webhook_event_types.set(types)  # type: ignore[arg-type] # pynamodb types lists as attributes
        if types is not None
        else Vendor.webhook_event_types.remove(),
        Vendor.webhook_disabled_at.remove(),
        Vendor.webhook_disabled_reason.remove(),
        Vendor.webhook_failing_since.remove(),
    ]
    if not vendor.webhook_secret_ct:  # vendors always get one at creation; never sign without one
        secret_ct = get_cipher().encrypt_text(new_webhook_secret(), secret_context(vendor.vendor_id))
        actions.append(Vendor.webhook_secret_ct.set(secret_ct))
    detail = {"host": _host(url), "event_types": len(types) if types else len(EVENT_TYPES)}
    try:
        with transaction() as tx:
            tx.update(vendor, actions=actions, condition=Vendor.vendor_id.exists())
            tx.save(audit_record(vendor.vendor_id, "webhook_endpoint.updated", actor, detail=detail, now=at))
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    vendor.refresh(consistent_read=True)
    return endpoint_view(vendor, at)


def rotate_secret(vendor: Vendor, actor: str, now: float | None = None) -> dict[str, Any]:
    """A new secret (returned once); the current one keeps signing for the grace period."""
    at = time.time() if now is None else now
    secret = new_webhook_secret()
    current = vendor.webhook_secret_ct
    until = at + grace_seconds()
    actions: list[Any] = [
        Vendor.webhook_secret_ct.set(get_cipher().encrypt_text(secret, secret_context(vendor.vendor_id))),
        Vendor.webhook_secret_rotated_at.set(at),
    ]
    if current:
        actions += [
            Vendor.webhook_previous_secret_ct.set(current),
            Vendor.webhook_previous_secret_expires_at.set(until),
        ]
    condition = Vendor.webhook_secret_ct == current if current else Vendor.webhook_secret_ct.does_not_exist()
    try:
        with transaction() as tx:
            tx.update(vendor, actions=actions, condition=condition)
            tx.save(audit_record(vendor.vendor_id, "webhook_secret.rotated", actor, now=at))
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            raise BrokerError(
                "rotation_in_progress",
                409,
                "Rotation in progress",
                "The secret was rotated concurrently; read the endpoint and try again.",
            ) from exc
        raise StorageUnavailable() from exc
    vendor.refresh(consistent_read=True)
    return {"secret": secret, **endpoint_view(vendor, at)}


def secret_context(vendor_id: str) -> dict[str, str]:
    return vendor_context(vendor_id, SECRET_PURPOSE)


def signing_secrets(vendor: Vendor, now: float) -> list[str]:
    """The current secret, then the previous one while its grace period lasts."""
    cipher = get_cipher()
    context = secret_context(vendor.vendor_id)
    if not vendor.webhook_secret_ct:
        return []
    secrets = [cipher.decrypt_text(vendor.webhook_secret_ct, context)]
    until = vendor.webhook_previous_secret_expires_at
    if vendor.webhook_previous_secret_ct and until is not None and until > now:
        secrets.append(cipher.decrypt_text(vendor.webhook_previous_secret_ct, context))
    return secrets


def disable_endpoint(vendor: Vendor, reason: str, now: float) -> bool:
    """Disable once (the condition makes concurrent workers agree); True if this call did it."""
    try:
        with transaction() as tx:
            tx.update(
                vendor,
                actions=[Vendor.webhook_disabled_at.set(now), Vendor.webhook_disabled_reason.set(reason)],
                condition=Vendor.webhook_disabled_at.does_not_exist()
                & (Vendor.webhook_url == vendor.webhook_url),
            )
            tx.save(
                audit_record(
                    vendor.vendor_id,
                    "webhook_endpoint.disabled",
                    "system",
                    outcome="failure",
                    detail={"reason": reason, "host": _host(vendor.webhook_url or "")},
                    now=now,
                )
            )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return False
        raise StorageUnavailable() from exc
    logger.warning("webhook endpoint of vendor %s disabled: %s", vendor.vendor_id, reason)
    return True


def note_failure(vendor: Vendor, now: float) -> None:
    """Start the failing clock at the first failure since the last success."""
    if vendor.webhook_failing_since is not None:
        return
    try:
        vendor.update(
            actions=[Vendor.webhook_failing_since.set(now)],
            condition=Vendor.webhook_failing_since.does_not_exist(),
        )
    except PynamoDBException as exc:
        if not is_conditional_failure(exc):
            logger.warning("could not record a webhook failure for vendor %s", vendor.vendor_id)


def note_success(vendor: Vendor) -> None:
    """A success stops the failing clock."""
    if vendor.webhook_failing_since is None:
        return
    try:
        vendor.update(
            actions=[Vendor.webhook_failing_since.remove()],
            condition=Vendor.webhook_failing_since.exists(),
        )
    except PynamoDBException as exc:
        if not is_conditional_failure(exc):
            logger.warning("could not clear the webhook failure clock of vendor %s", vendor.vendor_id)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""
