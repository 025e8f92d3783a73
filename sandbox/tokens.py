"""RS256 JWTs as Xero issues them (xero-reference.md §1.9), and the checks XPM calls rely on.

The signing key is generated per process (2048-bit RSA, ``kid`` derived from its thumbprint),
published at the JWKS endpoint, and can be rotated through the control API to test a
broker's "refetch JWKS on unknown kid" path.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from sandbox.state import Connection, SandboxState

_lock = threading.Lock()
_keys: list[RSAKey] = []


def _new_key() -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"})
    key.ensure_kid()
    return key


def signing_key() -> RSAKey:
    with _lock:
        if not _keys:
            _keys.append(_new_key())
        return _keys[-1]


def rotate_signing_key() -> str:
    """Start signing with a new key; the JWKS keeps the previous one too. Returns the new kid."""
    with _lock:
        _keys.append(_new_key())
        del _keys[:-2]
        return str(_keys[-1].kid)


def jwks() -> dict[str, Any]:
    signing_key()
    with _lock:
        return {"keys": [k.as_dict(private=False) for k in _keys]}


def issue_jwt(claims: dict[str, Any]) -> str:
    key = signing_key()
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)


class TokenError(Exception):
    """An access token the API gateway refuses: carries Xero's status and problem body."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        title = {401: "Unauthorized", 403: "Forbidden"}.get(self.status, "Error")
        return {"title": title, "status": self.status, "detail": self.detail, "instance": str(uuid.uuid4())}


def verify_access_token(state: SandboxState, authorization: str | None) -> dict[str, Any]:
    """Claims of a valid ``Authorization: Bearer`` access token, or TokenError (401)."""
    if not authorization or not authorization.startswith("Bearer "):
        raise TokenError(401, "AuthenticationUnsuccessful", {"WWW-Authenticate": "Bearer"})
    raw = authorization.removeprefix("Bearer ").strip()
    with _lock:
        key_set = KeySet(list(_keys))
    try:
        claims = dict(jwt.decode(raw, key_set, algorithms=["RS256"]).claims)
    except (JoseError, ValueError) as exc:
        raise TokenError(401, "AuthenticationUnsuccessful", {"WWW-Authenticate": "Bearer"}) from exc
    exp = float(claims.get("exp", 0))
    if exp <= state.clock.now():
        stamp = state.clock.now_dt().fromtimestamp(exp).strftime("%m/%d/%Y %H:%M:%S")
        raise TokenError(401, f"TokenExpired: token expired at {stamp}", {"WWW-Authenticate": "Bearer"})
    return claims


def connection_for(state: SandboxState, claims: dict[str, Any], tenant_id: str | None) -> Connection:
    """The caller's connection to ``tenant_id``, or TokenError 403 AuthenticationUnsuccessful.

    403 when the tenant id is missing or wrong, the user disconnected the app, or the user lost
    "Connect third-party add-ons" in that practice (§1.11, §5.3).
    """
    with state.lock:
        user = state.users.get(str(claims.get("xero_userid")))
        for connection in state.connections.values():
            if (
                tenant_id
                and connection.tenant_id == tenant_id
                and connection.user_id == claims.get("xero_userid")
                and connection.client_id == claims.get("client_id")
            ):
                if user is None or not user.practices.get(tenant_id, False):
                    break
                return connection
    raise TokenError(403, "AuthenticationUnsuccessful")


def has_scope(claims: dict[str, Any], *accepted: str) -> bool:
    granted = claims.get("scope") or []
    if isinstance(granted, str):
        granted = granted.split()
    return any(scope in granted for scope in accepted)
