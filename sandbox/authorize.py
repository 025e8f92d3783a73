"""The authorization request and the user's consent: validation, connections and the code (§1.3).

Like Xero, a bad ``client_id``, ``redirect_uri``, ``response_type`` or scope never redirects back
to the app: the user sees an error page (§1.3). Consent creates at most one PRACTICEMANAGER
connection per (app, user, practice); re-consenting to a connected practice keeps the old
``authEventId`` (the "already connected" gotcha, §1.8).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sandbox import pkce
from sandbox.state import AuthCode, Connection, Practice, RegisteredApp, SandboxState, XeroUser

# Scopes the sandbox knows, with the words the consent page uses (§1.10). The single legacy
# ``practicemanager`` scope still appears in Xero's own XPM samples, so it is accepted too.
SCOPES: dict[str, str] = {
    "openid": "Sign you in with your Xero identity",
    "profile": "View your name and Xero user ID",
    "email": "View your email address",
    "offline_access": "Keep access to your data when you are not using the app",
    "practicemanager": "View and manage your Xero Practice Manager data",
    "practicemanager.client": "View and manage your Xero Practice Manager clients and client groups",
    "practicemanager.client.read": "View your Xero Practice Manager clients and client groups",
    "practicemanager.job": "View and manage your Xero Practice Manager jobs",
    "practicemanager.job.read": "View your Xero Practice Manager jobs",
    "practicemanager.staff": "View and manage your Xero Practice Manager staff",
    "practicemanager.staff.read": "View your Xero Practice Manager staff",
    "practicemanager.time": "View and manage your Xero Practice Manager time entries",
    "practicemanager.time.read": "View your Xero Practice Manager time entries",
}
REQUEST_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)


class AuthorizeError(Exception):
    """A request Xero refuses with an error page (status 400, never a redirect, §1.3)."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(message)
        self.title = title
        self.message = message


@dataclass(frozen=True)
class AuthorizeRequest:
    app: RegisteredApp
    redirect_uri: str
    scope: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    params: dict[str, str]  # as received, carried through the pages as hidden fields

    @property
    def wants_practice(self) -> bool:
        """Only tenant scopes make Xero ask which practice to connect."""
        return any(s == "practicemanager" or s.startswith("practicemanager.") for s in self.scope)


def parse_request(state: SandboxState, values: Mapping[str, str]) -> AuthorizeRequest:
    params = {name: values[name] for name in REQUEST_PARAMS if values.get(name) is not None}
    with state.lock:
        app = state.apps.get(params.get("client_id", ""))
    if app is None:
        raise AuthorizeError("Unknown app", "The client_id does not belong to a registered Xero app.")
    redirect_uri = params.get("redirect_uri", "")
    # Exact string match: no trailing-slash, case or prefix leniency (§1.2).
    if redirect_uri not in app.redirect_uris:
        raise AuthorizeError("Invalid redirect_uri", "The redirect_uri is not registered for this app.")
    if params.get("response_type") != "code":
        raise AuthorizeError("Unsupported response_type", "Only response_type=code is supported.")
    scope = params.get("scope", "").split()
    unknown = [s for s in scope if s not in SCOPES]
    if not scope or unknown:
        raise AuthorizeError("Invalid scope", f"Unknown or missing scope: {' '.join(unknown) or '(none)'}.")
    challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
    # RFC 7636 defaults a missing method to "plain", which Xero does not support (§1.2).
    if (challenge is not None or method is not None) and (
        not challenge or (method or "plain") not in pkce.SUPPORTED_METHODS
    ):
        raise AuthorizeError("Invalid code_challenge", "PKCE needs code_challenge_method=S256.")
    return AuthorizeRequest(
        app=app,
        redirect_uri=redirect_uri,
        scope=scope,
        state=params.get("state"),
        nonce=params.get("nonce"),
        code_challenge=challenge,
        code_challenge_method=method,
        params=params,
    )


def find_user(state: SandboxState, email_or_id: str) -> XeroUser | None:
    with state.lock:
        return state.users.get(email_or_id) or state.user_by_email(email_or_id)


def connectable_practices(state: SandboxState, user: XeroUser) -> list[Practice]:
    """Practices where the user holds "Connect third-party add-ons" (§5.3)."""
    with state.lock:
        return [state.practices[t] for t, ok in user.practices.items() if ok and t in state.practices]


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def denial_url(request: AuthorizeRequest) -> str:
    return with_query(request.redirect_uri, {"error": "access_denied", "state": request.state})


def approve(state: SandboxState, request: AuthorizeRequest, user: XeroUser, tenant_id: str | None) -> str:
    """Record the consent and return the callback URL carrying a fresh single-use code."""
    if tenant_id and not request.wants_practice:
        raise AuthorizeError("No practice requested", "This app did not ask for access to a practice.")
    if tenant_id and tenant_id not in {p.tenant_id for p in connectable_practices(state, user)}:
        raise AuthorizeError("Practice not available", "You can't connect this app to that practice.")
    auth_event_id = str(uuid.uuid4())
    now = state.clock.now()
    with state.lock:
        if tenant_id:
            _connect_practice(
                state, request.app.client_id, user, tenant_id, auth_event_id=auth_event_id, now=now
            )
        code = AuthCode(
            code=secrets.token_urlsafe(32),
            client_id=request.app.client_id,
            user_id=user.user_id,
            redirect_uri=request.redirect_uri,
            scope=list(request.scope),
            auth_event_id=auth_event_id,
            issued_at=now,
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
        )
        state.codes[code.code] = code
    return with_query(
        request.redirect_uri,
        {
            "code": code.code,
            "scope": " ".join(request.scope),
            "state": request.state,
            "session_state": secrets.token_urlsafe(16),
        },
    )


def _connect_practice(
    state: SandboxState, client_id: str, user: XeroUser, tenant_id: str, *, auth_event_id: str, now: float
) -> None:
    for connection in state.connections.values():
        if (connection.client_id, connection.user_id, connection.tenant_id) == (
            client_id,
            user.user_id,
            tenant_id,
        ):
            # Already connected: Xero bumps updatedDateUtc but keeps the old authEventId, so
            # GET /connections?authEventId=<new> comes back empty (§1.8 gotcha).
            connection.updated_at = now
            return
    practice = state.practices[tenant_id]
    connection = Connection(
        id=str(uuid.uuid4()),
        client_id=client_id,
        user_id=user.user_id,
        auth_event_id=auth_event_id,
        tenant_id=tenant_id,
        tenant_type="PRACTICEMANAGER",
        tenant_name=None if state.config.practice_tenant_name_null else practice.name,
        created_at=now,
        updated_at=now,
    )
    state.connections[connection.id] = connection
