"""The whole Xero OAuth dance against the sandbox over loopback HTTP, for any test to reuse.

``connect(sandbox, app, ALICE, BLOGGS)`` signs Alice in, consents to the Bloggs practice,
exchanges the code and returns the token response; the smaller steps are here too.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from sandbox.server import SandboxServer
from sandbox.state import stable_uuid

TIMEOUT = 10
ALICE = "alice@sandbox.example"  # may connect both practices
BOB = "bob@sandbox.example"  # in Bloggs, without "Connect third-party add-ons"
CAROL = "carol@sandbox.example"  # may connect Harbour only
BLOGGS = stable_uuid("practice", "bloggs")
HARBOUR = stable_uuid("practice", "harbour")
SCOPE = "openid profile email offline_access practicemanager.client practicemanager.staff.read"
DEMO_CLIENT_ID = "sandbox-demo-client"

ClientAuth = Literal["basic", "post"]


@dataclass(frozen=True)
class AppCredentials:
    client_id: str
    client_secret: str
    redirect_uri: str
    name: str


def register_app(
    sandbox: SandboxServer, name: str = "Test broker", redirect_uris: list[str] | None = None
) -> AppCredentials:
    """A new Xero app registered through the control API."""
    uris = redirect_uris or ["http://localhost:8000/oauth/callback"]
    response = requests.post(
        f"{sandbox.url}/_sandbox/apps", json={"name": name, "redirect_uris": uris}, timeout=TIMEOUT
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return AppCredentials(body["client_id"], body["client_secret"], uris[0], body["name"])


def demo_app(sandbox: SandboxServer) -> AppCredentials:
    """The app the sandbox seeds; its secret is read from the state (same process)."""
    app = sandbox.state.apps[DEMO_CLIENT_ID]
    return AppCredentials(app.client_id, app.client_secret, app.redirect_uris[0], app.name)


def user_id(sandbox: SandboxServer, email: str) -> str:
    user = sandbox.state.user_by_email(email)
    assert user is not None
    return user.user_id


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(
    app: AppCredentials,
    *,
    scope: str = SCOPE,
    state: str = "state-123",
    nonce: str | None = None,
    code_challenge: str | None = None,
    redirect_uri: str | None = None,
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": redirect_uri or app.redirect_uri,
        "scope": scope,
        "state": state,
    }
    if nonce is not None:
        params["nonce"] = nonce
    if code_challenge is not None:
        params["code_challenge"] = code_challenge
        params["code_challenge_method"] = "S256"
    return params


def authorize_url(sandbox: SandboxServer) -> str:
    return f"{sandbox.url}/identity/connect/authorize"


def callback_params(response: requests.Response) -> dict[str, str]:
    """The query of the 302 back to the app's redirect_uri."""
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def consent(
    sandbox: SandboxServer,
    app: AppCredentials,
    user_email: str,
    tenant_id: str | None = None,
    *,
    decision: str = "allow",
    **params: Any,
) -> requests.Response:
    """The scripted form of the consent pages: one POST carrying user, practice and decision."""
    form = authorize_params(app, **params) | {"user": user_email, "decision": decision}
    if tenant_id is not None:
        form["tenant_id"] = tenant_id
    return requests.post(authorize_url(sandbox), data=form, allow_redirects=False, timeout=TIMEOUT)


def authorize(
    sandbox: SandboxServer, app: AppCredentials, user_email: str, tenant_id: str | None = None, **params: Any
) -> str:
    """Consent and return the authorization code (checking the state round-trips)."""
    response = consent(sandbox, app, user_email, tenant_id, **params)
    query = callback_params(response)
    assert query["state"] == params.get("state", "state-123")
    return query["code"]


def _client_auth(app: AppCredentials, form: dict[str, str], auth: ClientAuth) -> dict[str, Any]:
    if auth == "basic":
        return {"data": form, "auth": (app.client_id, app.client_secret)}
    return {"data": form | {"client_id": app.client_id, "client_secret": app.client_secret}}


def token_request(
    sandbox: SandboxServer,
    app: AppCredentials,
    form: dict[str, str],
    *,
    auth: ClientAuth = "basic",
    timeout: float = TIMEOUT,
) -> requests.Response:
    return requests.post(f"{sandbox.url}/connect/token", **_client_auth(app, form, auth), timeout=timeout)


def exchange(
    sandbox: SandboxServer,
    app: AppCredentials,
    code: str,
    *,
    code_verifier: str | None = None,
    redirect_uri: str | None = None,
    auth: ClientAuth = "basic",
) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri or app.redirect_uri,
    }
    if code_verifier is not None:
        form["code_verifier"] = code_verifier
    return token_request(sandbox, app, form, auth=auth)


def refresh(
    sandbox: SandboxServer,
    app: AppCredentials,
    refresh_token: str,
    *,
    auth: ClientAuth = "basic",
    timeout: float = TIMEOUT,
) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return token_request(sandbox, app, form, auth=auth, timeout=timeout)


def connect(
    sandbox: SandboxServer, app: AppCredentials, user_email: str, tenant_id: str | None = None, **params: Any
) -> dict[str, Any]:
    """The whole dance: consent, exchange the code, return the token response."""
    code = authorize(sandbox, app, user_email, tenant_id, **params)
    response = exchange(sandbox, app, code)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def revoke(sandbox: SandboxServer, app: AppCredentials, token: str) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/connect/revocation",
        data={"token": token, "token_type_hint": "refresh_token"},
        auth=(app.client_id, app.client_secret),
        timeout=TIMEOUT,
    )


def list_connections(
    sandbox: SandboxServer, access_token: str, auth_event_id: str | None = None
) -> requests.Response:
    params = {"authEventId": auth_event_id} if auth_event_id else None
    return requests.get(
        f"{sandbox.url}/connections",
        params=params,
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=TIMEOUT,
    )


def decode(sandbox: SandboxServer, token: str, *, audience: str) -> dict[str, Any]:
    """Claims of ``token`` after checking signature (published JWKS), iss, aud and lifetime."""
    keys = requests.get(f"{sandbox.url}/.well-known/openid-configuration/jwks", timeout=TIMEOUT).json()
    issuer = requests.get(f"{sandbox.url}/.well-known/openid-configuration", timeout=TIMEOUT).json()["issuer"]
    token_obj = jwt.decode(token, KeySet.import_key_set(keys), algorithms=["RS256"])
    registry = jwt.JWTClaimsRegistry(
        now=int(sandbox.state.clock.now()),
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
    )
    registry.validate(token_obj.claims)
    return dict(token_obj.claims)


def calls(sandbox: SandboxServer) -> dict[str, int]:
    body: dict[str, int] = requests.get(f"{sandbox.url}/_sandbox/calls", timeout=TIMEOUT).json()
    return body


def arm_fault(sandbox: SandboxServer, target: str, kind: str, count: int = 1, **params: Any) -> None:
    body = {"target": target, "kind": kind, "count": count, **params}
    response = requests.post(f"{sandbox.url}/_sandbox/faults", json=body, timeout=TIMEOUT)
    assert response.status_code == 201, response.text


def advance_clock(sandbox: SandboxServer, seconds: float) -> None:
    response = requests.post(
        f"{sandbox.url}/_sandbox/clock/advance", json={"seconds": seconds}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text


class _FormReader(HTMLParser):
    """Reads the one form of a sandbox page the way a browser would submit it (no JS)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str]] = []
        self.buttons: dict[str, tuple[str, str]] = {}  # label value -> (name, value)
        self._open_select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = attr.get("action")
        elif tag == "input" and (attr.get("type") != "radio" or "checked" in attr):
            self.fields.append((attr["name"], attr.get("value", "")))
        elif tag == "select":
            self._open_select = attr["name"]
        elif tag == "option" and self._open_select:
            self.fields.append((self._open_select, attr["value"]))  # the first option is selected
            self._open_select = None
        elif tag == "button" and attr.get("name"):
            self.buttons[attr["value"]] = (attr["name"], attr["value"])


def submit_page(
    sandbox: SandboxServer, page: requests.Response, button: str | None = None, **choices: str
) -> requests.Response:
    """Submit the page's form as a browser would: defaults, ``choices`` overriding, one button."""
    reader = _FormReader()
    reader.feed(page.text)
    assert reader.action, "the page has no form"
    form = dict(reader.fields) | choices
    if button is not None:
        name, value = reader.buttons[button]
        form[name] = value
    return requests.post(f"{sandbox.url}{reader.action}", data=form, allow_redirects=False, timeout=TIMEOUT)
