"""Vendor registration and API keys (contract.md §3; checklist B7, C1, C7).

Secrets are shown once, when created, and stored only envelope-encrypted, each under an
encryption context naming the vendor, the record and the purpose. Every change writes its audit
row (actor ``operator``: these run from the CLI) in the same DynamoDB transaction; the rows carry
key ids and settings, never a secret.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.audit import AuditRecord, audit_record
from chalicelib.config import DEFAULT_SCOPES, get_settings
from chalicelib.crypto import get_cipher, record_context
from chalicelib.errors import BrokerError
from chalicelib.storage import StorageUnavailable, find, is_conditional_failure, new_id, transaction
from chalicelib.tenants.models import Connection, Vendor, VendorKey
from chalicelib.tenants.urls import check_registered_url, check_webhook_url

MAX_ACTIVE_KEYS = 2
OPERATOR = "operator"


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    key_secret: str


@dataclass(frozen=True)
class CreatedVendor:
    vendor_id: str
    key: IssuedKey
    webhook_secret: str


def key_context(vendor_id: str, key_id: str) -> dict[str, str]:
    return record_context("vendor-api-key", vendor_id, key_id)


def vendor_context(vendor_id: str, purpose: str) -> dict[str, str]:
    return record_context(purpose, vendor_id, vendor_id)


def new_key_secret() -> str:
    """32 random bytes, url-safe base64. The HMAC key is this string's ASCII bytes."""
    return secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def vendor_not_found(vendor_id: str) -> BrokerError:
    return BrokerError("vendor_not_found", 404, "Vendor not found", f"No vendor {vendor_id!r}.")


def create_vendor(
    *,
    name: str,
    xero_client_id: str,
    xero_client_secret: str,
    return_urls: list[str],
    webhook_url: str | None = None,
    scopes: str | None = None,
    require_mfa_attestation: bool = False,
    allow_sensitive_fields: bool = False,
    actor: str = OPERATOR,
    principal: str | None = None,
) -> CreatedVendor:
    """Register a vendor with its first key; ``principal`` (the operator's AWS identity) is audited."""
    settings = get_settings()
    if not name.strip() or not xero_client_id.strip() or not xero_client_secret:
        raise BrokerError(
            "invalid_vendor", 422, "Invalid vendor", "name, Xero client id and secret are required"
        )
    if not return_urls:
        raise BrokerError("invalid_vendor", 422, "Invalid vendor", "at least one return URL is required")
    urls = [check_registered_url(u, "return_url", local_stage=settings.is_local) for u in return_urls]
    if webhook_url is not None:
        check_webhook_url(webhook_url, "webhook_url", local_stage=settings.is_local)
    cipher = get_cipher()
    vendor_id = new_id("v")
    webhook_secret = new_webhook_secret()
    now = time.time()
    vendor = Vendor(
        vendor_id,
        name=name.strip(),
        xero_client_id=xero_client_id.strip(),
        xero_client_secret_ct=cipher.encrypt_text(
            xero_client_secret, vendor_context(vendor_id, "xero-client-secret")
        ),
        return_urls=urls,
        webhook_url=webhook_url,
        webhook_secret_ct=cipher.encrypt_text(webhook_secret, vendor_context(vendor_id, "webhook-secret")),
        scopes=(scopes or settings.xero_scopes or DEFAULT_SCOPES).strip(),
        require_mfa_attestation=require_mfa_attestation,
        allow_sensitive_fields=allow_sensitive_fields,
        created_at=now,
    )
    key_row, key = _new_key(vendor_id, now)
    detail = {
        "key_id": key.key_id,
        "xero_client_id": vendor.xero_client_id,
        "scopes": vendor.scopes,
        "require_mfa_attestation": require_mfa_attestation,
        "allow_sensitive_fields": allow_sensitive_fields,
        "return_urls": len(urls),
        "webhook_url": webhook_url is not None,
    }
    with _writing() as tx:
        tx.save(vendor, condition=Vendor.vendor_id.does_not_exist())
        tx.save(key_row, condition=VendorKey.key_id.does_not_exist())
        tx.save(_audit(vendor_id, "vendor.created", detail, now, actor=actor, principal=principal))
    return CreatedVendor(vendor_id, key, webhook_secret)


def get_vendor(vendor_id: str) -> Vendor:
    vendor = find(Vendor, vendor_id)
    if vendor is None:
        raise vendor_not_found(vendor_id)
    return vendor


def active_keys(vendor_id: str) -> list[VendorKey]:
    return [k for k in VendorKey.by_vendor.query(vendor_id) if k.status == "active"]


def rotate_key(vendor_id: str, actor: str = OPERATOR, principal: str | None = None) -> IssuedKey:
    """Issue a new key; existing keys stay valid until revoked (at most two active, B7)."""
    get_vendor(vendor_id)
    active = active_keys(vendor_id)
    if len(active) >= MAX_ACTIVE_KEYS:
        raise BrokerError(
            "too_many_keys",
            409,
            "Too many active keys",
            f"Vendor {vendor_id} already has {MAX_ACTIVE_KEYS} active keys; revoke one first.",
        )
    now = time.time()
    key_row, key = _new_key(vendor_id, now)
    detail = {"key_id": key.key_id, "active_keys": [k.key_id for k in active] + [key.key_id]}
    with _writing() as tx:
        tx.save(key_row, condition=VendorKey.key_id.does_not_exist())
        tx.save(_audit(vendor_id, "vendor_key.issued", detail, now, actor=actor, principal=principal))
    return key


def revoke_key(vendor_id: str, key_id: str, actor: str = OPERATOR, principal: str | None = None) -> None:
    """Revoke a key of this vendor; revoking a revoked key changes (and records) nothing."""
    key = find(VendorKey, key_id)
    if key is None or key.vendor_id != vendor_id:
        raise BrokerError("key_not_found", 404, "Key not found", f"No key {key_id!r}.")
    now = time.time()
    try:
        with transaction() as tx:
            tx.update(
                key,
                actions=[VendorKey.status.set("revoked"), VendorKey.revoked_at.set(now)],
                condition=VendorKey.status == "active",
            )
            detail = {"key_id": key_id}
            tx.save(_audit(vendor_id, "vendor_key.revoked", detail, now, actor=actor, principal=principal))
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return  # already revoked (its revoked_at and audit row stay the first ones)
        raise StorageUnavailable() from exc


def key_secret(key: VendorKey) -> bytes:
    return get_cipher().decrypt(key.secret_ct, key_context(key.vendor_id, key.key_id))


def list_tenants(vendor_id: str, status: str | None = None) -> list[Connection]:
    get_vendor(vendor_id)
    condition = Connection.status == status if status else None
    return list(Connection.query(vendor_id, filter_condition=condition))


def _new_key(vendor_id: str, now: float) -> tuple[VendorKey, IssuedKey]:
    """A key row to save (secret encrypted) and the secret to show once."""
    key_id = new_id("vk")
    secret = new_key_secret()
    row = VendorKey(
        key_id,
        vendor_id=vendor_id,
        secret_ct=get_cipher().encrypt_text(secret, key_context(vendor_id, key_id)),
        status="active",
        created_at=now,
    )
    return row, IssuedKey(key_id, secret)


def _audit(
    vendor_id: str, action: str, detail: dict[str, Any], now: float, *, actor: str, principal: str | None
) -> AuditRecord:
    if principal:
        detail = {**detail, "principal": principal}
    return audit_record(vendor_id, action, actor, detail=detail, now=now)


@contextmanager
def _writing() -> Iterator[Any]:
    """A transaction whose DynamoDB failures surface as ``storage_unavailable`` (503)."""
    try:
        with transaction() as tx:
            yield tx
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
