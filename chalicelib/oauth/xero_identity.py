"""Xero identity's token and revocation endpoints, through authlib (xero-reference §1.3 to §1.7).

Every failure becomes one of three things the callers can act on: ``InvalidGrant`` (terminal
for this refresh token or code), ``InvalidClient`` (the vendor's Xero app is misconfigured),
or ``UpstreamError`` (transient: network, timeout, 5xx, 429, unexpected bodies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from chalicelib.oauth.errors import InvalidClient, InvalidGrant, UpstreamError
from chalicelib.oauth.xero_http import TIMEOUT

REFRESH_TOKEN_LIFETIME = 60 * 86400  # unused refresh tokens expire after 60 days (§1.5)


@dataclass(frozen=True)
class XeroApp:
    client_id: str
    client_secret: str
    redirect_uri: str


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    access_expires_at: float
    scope: str
    id_token: str | None = None

    def to_storage(self) -> dict[str, Any]:
        # The id_token is validated once at connect time and never stored.
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "access_expires_at": self.access_expires_at,
            "scope": self.scope,
        }

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> TokenSet:
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            access_expires_at=float(data["access_expires_at"]),
            scope=str(data.get("scope", "")),
        )


def _session(app: XeroApp, **kwargs: Any) -> OAuth2Session:
    return OAuth2Session(
        client_id=app.client_id,
        client_secret=app.client_secret,
        token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic",
        redirect_uri=app.redirect_uri,
        default_timeout=TIMEOUT,
        **kwargs,
    )


def authorization_url(
    app: XeroApp,
    endpoint: str,
    *,
    scope: str,
    state: str,
    nonce: str,
    code_verifier: str | None,
) -> str:
    """The authorize URL: response_type=code, state, nonce and (when enabled) PKCE S256 (A1)."""
    extra: dict[str, Any] = {"code_challenge_method": "S256"} if code_verifier else {}
    session = _session(app, scope=scope, **extra)
    url, _ = session.create_authorization_url(endpoint, state=state, code_verifier=code_verifier, nonce=nonce)
    return str(url)


def exchange_code(
    app: XeroApp, token_endpoint: str, code: str, code_verifier: str | None, now: float | None = None
) -> TokenSet:
    session = _session(app)
    kwargs: dict[str, Any] = {"code": code, "grant_type": "authorization_code"}
    if code_verifier:
        kwargs["code_verifier"] = code_verifier
    token = _call(lambda: session.fetch_token(token_endpoint, **kwargs))
    return _token_set(token, now)


def refresh(app: XeroApp, token_endpoint: str, refresh_token: str, now: float | None = None) -> TokenSet:
    session = _session(app)
    token = _call(lambda: session.refresh_token(token_endpoint, refresh_token=refresh_token))
    return _token_set(token, now, previous_refresh_token=refresh_token)


def revoke(app: XeroApp, revocation_endpoint: str, refresh_token: str) -> None:
    """Revoke a refresh token: at Xero this also removes all the user's connections (§1.7)."""
    session = _session(app)
    response = _call(
        lambda: session.revoke_token(
            revocation_endpoint, token=refresh_token, token_type_hint="refresh_token"
        )
    )
    if isinstance(response, requests.Response) and response.status_code >= 400:
        _raise_for_error_body(response)


def _call(operation: Any) -> Any:
    try:
        return operation()
    except AuthlibBaseError as exc:
        error = getattr(exc, "error", "")
        if error == "invalid_grant":
            raise InvalidGrant(getattr(exc, "description", "") or "") from exc
        if error in {"invalid_client", "unauthorized_client"}:
            raise InvalidClient() from exc
        raise UpstreamError(f"Xero identity refused the request ({error or 'unknown error'})") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise UpstreamError(f"Xero identity answered {status}") from exc
    except requests.RequestException as exc:
        raise UpstreamError(f"Xero identity unreachable ({type(exc).__name__})") from exc


def _raise_for_error_body(response: requests.Response) -> None:
    try:
        error = response.json().get("error", "")
    except ValueError:
        error = ""
    if error == "invalid_client":
        raise InvalidClient()
    raise UpstreamError(f"Xero revocation answered {response.status_code}")


def _token_set(token: Any, now: float | None, previous_refresh_token: str | None = None) -> TokenSet:
    issued = time.time() if now is None else now
    try:
        access_token = str(token["access_token"])
        expires_in = float(token.get("expires_in", 1800))
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamError("Xero's token response has no access token") from exc
    refresh_token = token.get("refresh_token") or previous_refresh_token
    if not refresh_token:
        raise UpstreamError("Xero's token response has no refresh token (is offline_access granted?)")
    return TokenSet(
        access_token=access_token,
        refresh_token=str(refresh_token),
        access_expires_at=issued + expires_in,
        scope=str(token.get("scope", "")),
        id_token=token.get("id_token"),
    )
