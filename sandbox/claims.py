"""The access token, id_token and token response Xero returns (§1.4, §1.9), on the sandbox clock."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from sandbox.state import Grant, SandboxState, XeroUser, stable_uuid
from sandbox.tokens import issue_jwt


def _subject(user: XeroUser) -> str:
    # Xero's ``sub`` is an opaque hex id distinct from xero_userid; stable per user here.
    return stable_uuid("sub", user.user_id).replace("-", "")


def _at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: base64url of the left half of SHA-256 of the access token."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def access_token_claims(state: SandboxState, issuer: str, grant: Grant, user: XeroUser) -> dict[str, Any]:
    now = int(state.clock.now())
    return {
        "nbf": now,
        "exp": now + state.config.access_token_lifetime,
        "iss": issuer,
        "aud": f"{issuer}/resources",
        "client_id": grant.client_id,
        "sub": _subject(user),
        "auth_time": int(grant.auth_time),
        "idp": "xero",
        "xero_userid": user.user_id,
        "global_session_id": grant.global_session_id,
        "jti": uuid.uuid4().hex.upper(),
        # The broker finds the consent's tenants through this claim (§1.8), which the
        # id_token does not carry.
        "authentication_event_id": grant.auth_event_id,
        "scope": list(grant.scope),  # a JSON array, not a space-separated string (§1.9)
        "amr": ["pwd"],
    }


def id_token_claims(
    state: SandboxState, issuer: str, grant: Grant, user: XeroUser, *, access_token: str, nonce: str | None
) -> dict[str, Any]:
    now = int(state.clock.now())
    claims: dict[str, Any] = {
        "nbf": now,
        "exp": now + state.config.id_token_lifetime,
        "iss": issuer,
        "aud": grant.client_id,
        "iat": now,
        "at_hash": _at_hash(access_token),
        "sid": stable_uuid("sid", grant.global_session_id).replace("-", ""),
        "sub": _subject(user),
        "auth_time": int(grant.auth_time),
        "idp": "xero",
        "xero_userid": user.user_id,
        "global_session_id": grant.global_session_id,
        "preferred_username": user.email,
        "email": user.email,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "amr": ["pwd"],
    }
    if nonce is not None:
        claims["nonce"] = nonce
    return claims


def token_response(
    state: SandboxState, issuer: str, grant: Grant, user: XeroUser, nonce: str | None = None
) -> dict[str, Any]:
    """The JSON body of a successful code exchange or refresh for ``grant`` (§1.4)."""
    access_token = issue_jwt(access_token_claims(state, issuer, grant, user))
    body: dict[str, Any] = {}
    # id_token only with openid; refresh_token only with offline_access (§1.4).
    if "openid" in grant.scope:
        body["id_token"] = issue_jwt(
            id_token_claims(state, issuer, grant, user, access_token=access_token, nonce=nonce)
        )
    body.update(
        {
            "access_token": access_token,
            "expires_in": state.config.access_token_lifetime,
            "token_type": "Bearer",
        }
    )
    if "offline_access" in grant.scope:
        body["refresh_token"] = grant.refresh_token
    body["scope"] = " ".join(grant.scope)
    return body
