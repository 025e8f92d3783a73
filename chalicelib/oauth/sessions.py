"""Connect sessions: created by a signed vendor call, used once by the firm's browser (A9)."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.config import get_settings
from chalicelib.errors import BrokerError
from chalicelib.oauth.models import ConnectSession, session_user
from chalicelib.storage import StorageUnavailable, find, ttl_at
from chalicelib.tenants.models import Connection, Vendor

SESSION_TTL = 600
TENANT_REF = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MODES = ("connect", "reauthorise")


@dataclass(frozen=True)
class NewSession:
    session_id: str
    connect_url: str
    expires_at: float


def invalid_request(detail: str, field: str | None = None) -> BrokerError:
    extra = {"field": field} if field else {}
    return BrokerError("invalid_request", 422, "Invalid request", detail, extra=extra)


def tenant_not_found() -> BrokerError:
    return BrokerError("tenant_not_found", 404, "Tenant not found", "No such tenant for this vendor.")


def check_tenant_ref(tenant_ref: str) -> str:
    if not TENANT_REF.match(tenant_ref or ""):
        # Another vendor's tenant and a malformed ref both read as "not found": no existence leak.
        raise tenant_not_found()
    return tenant_ref


def create_session(vendor: Vendor, tenant_ref: str, body: Any, now: float | None = None) -> NewSession:
    check_tenant_ref(tenant_ref)
    if not isinstance(body, dict):
        raise invalid_request("The body must be a JSON object.")
    return_url = body.get("return_url")
    if not isinstance(return_url, str) or return_url not in (vendor.return_urls or []):
        # Exact string match against the registered URLs, no normalisation (checklist A5).
        raise BrokerError(
            "return_url_not_registered",
            422,
            "Return URL not registered",
            "return_url must exactly match one of the vendor's registered return URLs.",
            extra={"field": "return_url"},
        )
    mode = body.get("mode", "connect")
    if mode not in MODES:
        raise invalid_request("mode must be 'connect' or 'reauthorise'.", "mode")
    allow_change = body.get("allow_practice_change", False)
    if not isinstance(allow_change, bool):
        raise invalid_request("allow_practice_change must be a boolean.", "allow_practice_change")
    user = _user(body.get("user"))
    if vendor.require_mfa_attestation and user.get("mfa_verified") is not True:
        raise BrokerError(
            "mfa_attestation_required",
            422,
            "MFA attestation required",
            "This vendor requires user.mfa_verified = true: the user must have passed MFA in your product.",
            extra={"field": "user.mfa_verified"},
        )
    if mode == "reauthorise" and not _connection_exists(vendor.vendor_id, tenant_ref):
        raise tenant_not_found()
    created = time.time() if now is None else now
    session_id = f"cs_{secrets.token_urlsafe(24)}"
    session = ConnectSession(
        session_id,
        vendor_id=vendor.vendor_id,
        tenant_ref=tenant_ref,
        return_url=return_url,
        mode=mode,
        allow_practice_change=allow_change,
        user=session_user(**user) if user else None,
        status="pending",
        created_at=created,
        expires_at=created + SESSION_TTL,
        expires_at_ttl=ttl_at(created + SESSION_TTL + 86400),
    )
    try:
        session.save(condition=ConnectSession.session_id.does_not_exist())
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    url = f"{get_settings().public_url}/connect/{session_id}"
    return NewSession(session_id, url, created + SESSION_TTL)


def _user(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid_request("user must be an object.", "user")
    user: dict[str, Any] = {}
    for name in ("id", "email"):
        value = raw.get(name)
        if value is not None:
            if not isinstance(value, str) or len(value) > 256:
                raise invalid_request(
                    f"user.{name} must be a string of at most 256 characters.", f"user.{name}"
                )
            user[name] = value
    mfa = raw.get("mfa_verified")
    if mfa is not None:
        if not isinstance(mfa, bool):
            raise invalid_request("user.mfa_verified must be a boolean.", "user.mfa_verified")
        user["mfa_verified"] = mfa
    return user


def _connection_exists(vendor_id: str, tenant_ref: str) -> bool:
    connection = find(Connection, vendor_id, tenant_ref)
    return connection is not None and connection.status != "revoked"


def load_session(session_id: str) -> ConnectSession | None:
    if not re.match(r"^cs_[A-Za-z0-9_-]{20,64}$", session_id or ""):
        return None
    return find(ConnectSession, session_id, consistent=True)
