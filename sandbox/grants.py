"""The grant lifecycle at Xero's token and revocation endpoints: exchange, refresh, revoke.

One ``Grant`` per code exchange. Its refresh token rotates on every use; the superseded token
stays replayable for ``config.refresh_grace`` (30 min, §1.5) so a client whose refresh response
was lost can recover; what that replay returns is UNVERIFIED at Xero, hence
``config.grace_mode``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from sandbox import pkce
from sandbox.claims import token_response
from sandbox.oauth_errors import OAuthError
from sandbox.state import AuthCode, Grant, RegisteredApp, SandboxState

EXPIRED_OR_REVOKED = "Token has been expired or revoked."


def new_refresh_token() -> str:
    return secrets.token_urlsafe(48)  # opaque, 48 random bytes


def _redeem_code(state: SandboxState, app: RegisteredApp, form: Mapping[str, str]) -> AuthCode:
    """The valid code in ``form``, marked used; OAuthError invalid_grant otherwise (§1.6)."""
    code = state.codes.get(form.get("code", ""))
    if code is None or code.client_id != app.client_id or code.used:
        raise OAuthError("invalid_grant")
    # Burnt once its own client presents it, even if a later check fails: codes are single use
    # (§1.3) and a failed attempt must not be retried with other parameters.
    code.used = True
    if state.clock.now() - code.issued_at > state.config.code_lifetime:
        raise OAuthError("invalid_grant")
    if form.get("redirect_uri") != code.redirect_uri:
        raise OAuthError("invalid_grant")
    if code.code_challenge is not None and not pkce.verifier_matches(
        code.code_challenge, form.get("code_verifier")
    ):
        raise OAuthError("invalid_grant")
    return code


def exchange_code(
    state: SandboxState, app: RegisteredApp, form: Mapping[str, str], issuer: str
) -> dict[str, Any]:
    """``grant_type=authorization_code`` (§1.4): a new grant and its first token set."""
    with state.lock:
        code = _redeem_code(state, app, form)
        user = state.users.get(code.user_id)
        if user is None:
            raise OAuthError("invalid_grant")
        now = state.clock.now()
        grant = Grant(
            grant_id=str(uuid.uuid4()),
            client_id=app.client_id,
            user_id=user.user_id,
            scope=list(code.scope),
            auth_event_id=code.auth_event_id,
            refresh_token=new_refresh_token(),
            refresh_issued_at=now,
            auth_time=code.issued_at,
        )
        state.grants[grant.grant_id] = grant
        return token_response(state, issuer, grant, user, nonce=code.nonce)


def _find_grant(state: SandboxState, refresh_token: str) -> tuple[Grant | None, bool]:
    """The grant whose current (True) or previous (False) refresh token this is."""
    for grant in state.grants.values():
        if "offline_access" not in grant.scope:
            continue  # no refresh token was ever handed out for it
        if grant.refresh_token == refresh_token:
            return grant, True
        if grant.previous_refresh_token == refresh_token:
            return grant, False
    return None, False


def _rotate(state: SandboxState, grant: Grant, issuer: str) -> dict[str, Any]:
    now = state.clock.now()
    grant.previous_refresh_token = grant.refresh_token
    grant.previous_valid_until = now + state.config.refresh_grace
    grant.refresh_token = new_refresh_token()
    grant.refresh_issued_at = now
    # No nonce on refresh: it belongs to the authorization request only (OIDC Core §12.2).
    body = token_response(state, issuer, grant, state.users[grant.user_id])
    grant.last_issued = body
    return body


def refresh(state: SandboxState, app: RegisteredApp, form: Mapping[str, str], issuer: str) -> dict[str, Any]:
    """``grant_type=refresh_token`` (§1.5): rotate, honour the grace window, expire idle tokens."""
    with state.lock:
        grant, is_current = _find_grant(state, form.get("refresh_token", ""))
        if grant is None or grant.client_id != app.client_id:
            raise OAuthError("invalid_grant")
        if grant.revoked:
            raise OAuthError("invalid_grant", EXPIRED_OR_REVOKED)
        now = state.clock.now()
        if is_current:
            if now - grant.refresh_issued_at > state.config.refresh_token_idle_expiry:
                raise OAuthError("invalid_grant", EXPIRED_OR_REVOKED)
            return _rotate(state, grant, issuer)
        if now > grant.previous_valid_until:
            raise OAuthError("invalid_grant")
        if state.config.grace_mode == "same" and grant.last_issued is not None:
            return dict(grant.last_issued)
        # "reissue": the replay rotates again; the token it supersedes gets the grace window.
        return _rotate(state, grant, issuer)


def revoke(state: SandboxState, app: RegisteredApp, token: str) -> None:
    """Revoke the user's grants with this app and remove all their connections to it (§1.7).

    An unknown token, or one issued to another app, changes nothing: RFC 7009 §2.2 still
    answers 200, so nothing leaks about other apps' tokens.
    """
    with state.lock:
        grant, _ = _find_grant(state, token)
        if grant is None or grant.client_id != app.client_id or grant.revoked:
            return
        owner = (grant.client_id, grant.user_id)
        for other in state.grants.values():
            if (other.client_id, other.user_id) == owner:
                other.revoked = True
        doomed = [c.id for c in state.connections.values() if (c.client_id, c.user_id) == owner]
        for connection_id in doomed:
            del state.connections[connection_id]
