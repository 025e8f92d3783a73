"""Vendor registration and API keys (contract.md §3; checklist B7, C1, C7).

Secrets are shown once, when created, and stored only envelope-encrypted, each under an
encryption context naming the vendor, the record and the purpose.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass

from chalicelib.config import DEFAULT_SCOPES, get_settings
from chalicelib.crypto import get_cipher, record_context
from chalicelib.errors import BrokerError
from chalicelib.storage import find, new_id
from chalicelib.tenants.models import Connection, Vendor, VendorKey
from chalicelib.tenants.urls import check_registered_url, check_webhook_url

MAX_ACTIVE_KEYS = 2


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
) -> CreatedVendor:
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
    vendor.save(condition=Vendor.vendor_id.does_not_exist())
    key = _issue_key(vendor_id, now)
    return CreatedVendor(vendor_id, key, webhook_secret)


def get_vendor(vendor_id: str) -> Vendor:
    vendor = find(Vendor, vendor_id)
    if vendor is None:
        raise vendor_not_found(vendor_id)
    return vendor


def active_keys(vendor_id: str) -> list[VendorKey]:
    return [k for k in VendorKey.by_vendor.query(vendor_id) if k.status == "active"]


def rotate_key(vendor_id: str) -> IssuedKey:
    """Issue a new key; existing keys stay valid until revoked (at most two active, B7)."""
    get_vendor(vendor_id)
    if len(active_keys(vendor_id)) >= MAX_ACTIVE_KEYS:
        raise BrokerError(
            "too_many_keys",
            409,
            "Too many active keys",
            f"Vendor {vendor_id} already has {MAX_ACTIVE_KEYS} active keys; revoke one first.",
        )
    return _issue_key(vendor_id, time.time())


def revoke_key(vendor_id: str, key_id: str) -> None:
    key = find(VendorKey, key_id)
    if key is None or key.vendor_id != vendor_id:
        raise BrokerError("key_not_found", 404, "Key not found", f"No key {key_id!r}.")
    key.update(actions=[VendorKey.status.set("revoked"), VendorKey.revoked_at.set(time.time())])


def key_secret(key: VendorKey) -> bytes:
    return get_cipher().decrypt(key.secret_ct, key_context(key.vendor_id, key.key_id))


def list_tenants(vendor_id: str, status: str | None = None) -> list[Connection]:
    get_vendor(vendor_id)
    condition = Connection.status == status if status else None
    return list(Connection.query(vendor_id, filter_condition=condition))


def _issue_key(vendor_id: str, now: float) -> IssuedKey:
    key_id = new_id("vk")
    secret = new_key_secret()
    VendorKey(
        key_id,
        vendor_id=vendor_id,
        secret_ct=get_cipher().encrypt_text(secret, key_context(vendor_id, key_id)),
        status="active",
        created_at=now,
    ).save(condition=VendorKey.key_id.does_not_exist())
    return IssuedKey(key_id, secret)
