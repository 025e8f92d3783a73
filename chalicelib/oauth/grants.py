"""Grants: one encrypted Xero token set per vendor x Xero user (xero-reference §1.5, §1.12).

A Xero token set belongs to the user and reaches every tenant that user connected, so all of a
vendor's connections authorised by one Xero user share one grant, and refreshing it is
serialised (see ``refresh``).
"""

from __future__ import annotations

import hashlib
import json
import os

from chalicelib.config import get_settings
from chalicelib.crypto import get_cipher, record_context
from chalicelib.oauth.models import Grant
from chalicelib.oauth.xero_clock import xero_now
from chalicelib.oauth.xero_identity import REFRESH_TOKEN_LIFETIME, TokenSet, XeroApp
from chalicelib.tenants.models import Vendor
from chalicelib.tenants.vendors import vendor_context

ROTATION_SHARDS = 4
ROTATE_AFTER_IDLE = 20 * 86400  # rotate well before Xero's 60-day idle expiry (issue 5 policy)


def rotate_after_seconds() -> float:
    """``XPMB_ROTATE_AFTER_DAYS`` (default 20): idle time after which a grant is rotated."""
    days = os.environ.get("XPMB_ROTATE_AFTER_DAYS")
    return float(days) * 86400 if days else float(ROTATE_AFTER_IDLE)


def grant_id_for(vendor_id: str, xero_user_id: str) -> str:
    digest = hashlib.sha256(f"{vendor_id}\x00{xero_user_id}".encode()).hexdigest()[:32]
    return f"g_{digest}"


def token_context(grant: Grant) -> dict[str, str]:
    return record_context("xero-token-set", grant.vendor_id, grant.grant_id)


def rotation_shard(grant_id: str) -> str:
    return f"s{int(hashlib.sha256(grant_id.encode()).hexdigest(), 16) % ROTATION_SHARDS}"


def read_tokens(grant: Grant) -> TokenSet:
    if not grant.token_ct:
        raise ValueError("grant holds no tokens")
    data = json.loads(get_cipher().decrypt(grant.token_ct, token_context(grant)))
    return TokenSet.from_storage(data)


def seal_tokens(grant: Grant, tokens: TokenSet) -> str:
    plaintext = json.dumps(tokens.to_storage(), separators=(",", ":")).encode()
    return get_cipher().encrypt(plaintext, token_context(grant))


def apply_token_set(
    grant: Grant, tokens: TokenSet, now: float | None = None, *, sealed: str | None = None
) -> None:
    """Set the token fields of ``grant`` (in memory) for a freshly issued token set.

    Times are on Xero's clock (``xero_now``); ``sealed`` is ``seal_tokens(grant, tokens)`` when
    the caller already has it (one KMS call for a write, its retries and any parking).
    """
    issued = xero_now() if now is None else now
    grant.token_ct = sealed or seal_tokens(grant, tokens)
    grant.scopes = tokens.scope
    grant.access_expires_at = tokens.access_expires_at
    grant.refresh_issued_at = issued
    grant.refresh_expires_at = issued + REFRESH_TOKEN_LIFETIME
    grant.last_refreshed_at = issued
    grant.rotation_shard = rotation_shard(grant.grant_id)
    grant.next_rotation_at = issued + rotate_after_seconds()


def xero_app_for(vendor: Vendor) -> XeroApp:
    secret = get_cipher().decrypt_text(
        vendor.xero_client_secret_ct, vendor_context(vendor.vendor_id, "xero-client-secret")
    )
    return XeroApp(
        client_id=vendor.xero_client_id, client_secret=secret, redirect_uri=get_settings().redirect_uri
    )
