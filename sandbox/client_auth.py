"""Token-endpoint client authentication (RFC 6749 §2.3): one method per request, secret checked.

Xero SDKs use HTTP Basic (``client_secret_basic``); Xero's XPM Postman collection posts the
credentials in the form (``client_secret_post``). Both work here (§1.1).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from urllib.parse import unquote

from sandbox.oauth_errors import OAuthError
from sandbox.state import RegisteredApp, SandboxState


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client")
    # RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
    return unquote(client_id), unquote(secret)


def _presented_credentials(authorization: str | None, form: Mapping[str, str]) -> tuple[str, str]:
    basic = _basic_credentials(authorization)
    form_secret = form.get("client_secret")
    if basic is not None:
        # Two methods at once is an error (RFC 6749 §2.3); a matching client_id in the body is
        # tolerated because PKCE-style clients send it anyway (§1.4).
        if form_secret is not None or form.get("client_id", basic[0]) != basic[0]:
            raise OAuthError("invalid_client")
        return basic
    client_id = form.get("client_id")
    if not client_id or form_secret is None:
        raise OAuthError("invalid_client")
    return client_id, form_secret


def authenticate_client(
    state: SandboxState, authorization: str | None, form: Mapping[str, str]
) -> RegisteredApp:
    """The app whose credentials the request carries, or OAuthError invalid_client (400, §1.6)."""
    client_id, secret = _presented_credentials(authorization, form)
    with state.lock:
        app = state.apps.get(client_id)
    if app is None or not hmac.compare_digest(app.client_secret.encode(), secret.encode()):
        raise OAuthError("invalid_client")
    return app
