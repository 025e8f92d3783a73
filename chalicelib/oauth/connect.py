"""The browser half of connecting: start the Xero authorization, then handle the callback.

Security notes (security-checklist A1-A9): PKCE S256, a one-time ``state`` bound to the
browser by a cookie (``__Host-`` + Secure on https; a plain cookie on local http), a ``nonce``
checked in the id_token, the verifier and nonce stored encrypted, the tenant taken only from
this consent (``authEventId``), and redirects only to the session's exact registered URL.
Until the state and its cookie check out, nothing is trusted and nothing redirects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from pynamodb.exceptions import PynamoDBException

from chalicelib.audit import audit_record
from chalicelib.config import get_settings
from chalicelib.crypto import get_cipher, record_context
from chalicelib.errors import BrokerError
from chalicelib.oauth.discovery import identity_provider
from chalicelib.oauth.errors import IdTokenInvalid
from chalicelib.oauth.grants import apply_token_set, grant_id_for, xero_app_for
from chalicelib.oauth.id_token import unverified_claims, validate_id_token
from chalicelib.oauth.models import ConnectSession, Grant, OAuthState
from chalicelib.oauth.sessions import load_session
from chalicelib.oauth.xero_clock import xero_now
from chalicelib.oauth.xero_connections import XeroConnection, choose_practice, list_connections
from chalicelib.oauth.xero_identity import TokenSet, authorization_url, exchange_code
from chalicelib.storage import StorageUnavailable, find, is_conditional_failure, transaction, ttl_at
from chalicelib.sync.schedule import schedule_first_sync
from chalicelib.tenants.models import Connection, Vendor, authorised_by
from chalicelib.tenants.vendors import get_vendor
from chalicelib.web.pages import PageProblem
from chalicelib.webhooks.models import outbox_event

logger = logging.getLogger("xpmb.connect")
STATE_TTL = 600


@dataclass(frozen=True)
class Started:
    authorize_url: str
    set_cookie: str


@dataclass
class CallbackOutcome:
    redirect_url: str | None = None
    page: PageProblem | None = None
    headers: dict[str, str] = field(default_factory=dict)


def cookie_name() -> str:
    return "__Host-xpmb_oauth" if get_settings().public_url.startswith("https://") else "xpmb_oauth"


def _cookie(value: str, max_age: int) -> str:
    secure = "; Secure" if get_settings().public_url.startswith("https://") else ""
    return f"{cookie_name()}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"


def clear_cookie() -> str:
    return _cookie("", 0)


def _binding(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _state_context(record: OAuthState) -> dict[str, str]:
    return record_context("oauth-state", record.vendor_id, record.state)


LINK_UNKNOWN = PageProblem(404, "unknown_session", "Link not found", "This connect link is not valid.")
LINK_EXPIRED = PageProblem(
    410,
    "session_expired",
    "This link has expired",
    "Connect links are valid for 10 minutes. Go back to the application and start again.",
)
LINK_USED = PageProblem(
    410, "session_used", "This link was already used", "Go back to the application to see the connection."
)
BAD_STATE = PageProblem(
    400,
    "invalid_state",
    "This sign-in could not be completed",
    "The response from Xero did not match a sign-in started in this browser, or it was already used "
    "or has expired. Go back to the application and start connecting again.",
)


def session_problem(session: ConnectSession | None, now: float) -> PageProblem | None:
    if session is None:
        return LINK_UNKNOWN
    if session.status == "completed":
        return LINK_USED
    if session.expires_at <= now:
        return LINK_EXPIRED
    return None


def start_authorization(session_id: str, now: float | None = None) -> Started | PageProblem:
    current = time.time() if now is None else now
    session = load_session(session_id)
    problem = session_problem(session, current)
    if problem is not None or session is None:
        return problem or LINK_UNKNOWN
    settings = get_settings()
    vendor = get_vendor(session.vendor_id)
    provider = identity_provider(settings.xero_identity_url)
    metadata = provider.metadata()
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48) if settings.xero_pkce else None
    browser_secret = secrets.token_urlsafe(32)
    app = xero_app_for(vendor)
    url = authorization_url(
        app,
        metadata.authorization_endpoint,
        scope=vendor.scopes,
        state=state,
        nonce=nonce,
        code_verifier=verifier,
    )
    record = OAuthState(
        state,
        session_id=session.session_id,
        vendor_id=vendor.vendor_id,
        browser_binding=_binding(browser_secret),
        secrets_ct="",
        issuer=metadata.issuer,
        redirect_uri=app.redirect_uri,
        expires_at=min(current + STATE_TTL, session.expires_at + STATE_TTL),
        expires_at_ttl=ttl_at(current + STATE_TTL + 86400),
    )
    sealed = json.dumps({"code_verifier": verifier, "nonce": nonce}).encode()
    record.secrets_ct = get_cipher().encrypt(sealed, _state_context(record))
    try:
        record.save(condition=OAuthState.state.does_not_exist())
        session.update(actions=[ConnectSession.status.set("started")])
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    return Started(url, _cookie(browser_secret, STATE_TTL))


def handle_callback(
    params: dict[str, str], cookies: dict[str, str], now: float | None = None
) -> CallbackOutcome:
    current = time.time() if now is None else now
    record = _consume_state(params.get("state", ""), cookies.get(cookie_name(), ""), current)
    if isinstance(record, PageProblem):
        return CallbackOutcome(page=record, headers={"Set-Cookie": clear_cookie()})
    session = load_session(record.session_id)
    problem = session_problem(session, current)
    if problem is not None or session is None:
        return CallbackOutcome(page=problem or LINK_UNKNOWN, headers={"Set-Cookie": clear_cookie()})
    vendor = get_vendor(session.vendor_id)
    # From here the browser is the one that started this session: outcomes go to the vendor.
    try:
        connection, event_type = _complete(record, session, vendor, params, current)
    except ConnectFailure as failure:
        return _fail(session, failure, current)
    query = {"status": "connected", "tenant_ref": connection.tenant_ref, "session_id": session.session_id}
    logger.info("connect %s for %s/%s", event_type, vendor.vendor_id, session.tenant_ref)
    return CallbackOutcome(
        redirect_url=with_query(session.return_url, query), headers={"Set-Cookie": clear_cookie()}
    )


def _consume_state(state: str, cookie: str, now: float) -> OAuthState | PageProblem:
    if not state or len(state) > 128:
        return BAD_STATE
    record = find(OAuthState, state, consistent=True)
    if record is None:
        return BAD_STATE
    try:
        # Consumed exactly once, whatever happens next (A2): a replayed callback finds nothing.
        record.delete(condition=OAuthState.state.exists())
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return BAD_STATE
        raise StorageUnavailable() from exc
    if record.expires_at <= now:
        return BAD_STATE
    if not cookie or not hmac.compare_digest(_binding(cookie), record.browser_binding):
        return BAD_STATE
    return record


class ConnectFailure(Exception):
    """A failure the vendor is told about through its return URL (contract.md §5)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _complete(
    record: OAuthState, session: ConnectSession, vendor: Vendor, params: dict[str, str], now: float
) -> tuple[Connection, str]:
    if params.get("error"):
        failure = "access_denied" if params["error"] == "access_denied" else "upstream_error"
        raise ConnectFailure(failure, f"Xero returned error {params['error'][:64]!r}")
    if params.get("iss") and params["iss"] != record.issuer:
        raise ConnectFailure(
            "upstream_error", "callback iss differs from the issuer used (mix-up defence, A6)"
        )
    code = params.get("code")
    if not code:
        raise ConnectFailure("upstream_error", "callback without a code")
    sealed = json.loads(get_cipher().decrypt(record.secrets_ct, _state_context(record)))
    settings = get_settings()
    provider = identity_provider(record.issuer)
    app = xero_app_for(vendor)
    try:
        tokens = exchange_code(
            app, provider.metadata().token_endpoint, code, sealed.get("code_verifier"), now
        )
        if not tokens.id_token:
            raise ConnectFailure("upstream_error", "no id_token (is the openid scope granted?)")
        id_claims = validate_id_token(
            tokens.id_token,
            provider=provider,
            client_id=app.client_id,
            nonce=sealed["nonce"],
            now=xero_now(),  # Xero's clock: the sandbox's on a local demo that moved it
        )
        access_claims = unverified_claims(tokens.access_token)
    except IdTokenInvalid as exc:
        raise ConnectFailure("upstream_error", f"id_token rejected: {exc.reason}") from exc
    except BrokerError as exc:
        raise ConnectFailure("upstream_error", f"token exchange failed: {exc.code}") from exc
    xero_user_id = str(id_claims.get("xero_userid") or "")
    if not xero_user_id or access_claims.get("xero_userid") not in (None, xero_user_id):
        raise ConnectFailure("upstream_error", "tokens name no (or different) Xero users")
    existing = _existing_connection(vendor.vendor_id, session.tenant_ref)
    chosen = _chosen_practice(settings.xero_api_url, tokens, access_claims, existing)
    if chosen is None:
        raise ConnectFailure("no_practice_manager_access", "no PRACTICEMANAGER tenant was authorised")
    if (
        existing is not None
        and existing.xero_tenant_id
        and existing.xero_tenant_id != chosen.tenant_id
        and not session.allow_practice_change
    ):
        raise ConnectFailure("practice_mismatch", "a different XPM practice than the one connected before")
    return _store(
        vendor=vendor,
        session=session,
        existing=existing,
        chosen=chosen,
        tokens=tokens,
        id_claims=id_claims,
        now=now,
    )


def _existing_connection(vendor_id: str, tenant_ref: str) -> Connection | None:
    connection = find(Connection, vendor_id, tenant_ref, consistent=True)
    return None if connection is None or connection.status == "revoked" else connection


def _chosen_practice(
    api_url: str, tokens: TokenSet, access_claims: dict[str, Any], existing: Connection | None
) -> XeroConnection | None:
    from chalicelib.oauth.xero_connections import PRACTICE_MANAGER

    auth_event = str(access_claims.get("authentication_event_id") or "")
    try:
        this_consent = list_connections(api_url, tokens.access_token, auth_event) if auth_event else []
        everything: list[XeroConnection] = []
        if not any(c.tenant_type == PRACTICE_MANAGER for c in this_consent):
            everything = list_connections(api_url, tokens.access_token)
    except BrokerError as exc:
        raise ConnectFailure("upstream_error", f"connections lookup failed: {exc.code}") from exc
    return choose_practice(this_consent, everything, existing.xero_tenant_id if existing else None)


def _store(
    *,
    vendor: Vendor,
    session: ConnectSession,
    existing: Connection | None,
    chosen: XeroConnection,
    tokens: TokenSet,
    id_claims: dict[str, Any],
    now: float,
) -> tuple[Connection, str]:
    xero_user_id = str(id_claims["xero_userid"])
    grant_id = grant_id_for(vendor.vendor_id, xero_user_id)
    grant = find(Grant, grant_id, consistent=True)
    if grant is not None:
        grant.version = int(grant.version) + 1
    else:
        grant = Grant(
            grant_id, vendor_id=vendor.vendor_id, xero_user_id=xero_user_id, created_at=now, version=1
        )
    apply_token_set(grant, tokens)  # issue and due times on Xero's clock (xero_clock.py)
    grant.status = "active"
    grant.lease_owner = None  # a fresh consent ends any refresh lease
    grant.lease_until = None
    name = " ".join(p for p in (id_claims.get("given_name"), id_claims.get("family_name")) if p) or None
    event_type = "connection.created" if existing is None else "connection.reauthorised"
    connection = existing or Connection(vendor.vendor_id, session.tenant_ref, connected_at=now)
    previous_grant = connection.grant_id if existing is not None else None
    connection.status = "active"
    connection.status_reason = None
    connection.xero_tenant_id = chosen.tenant_id
    connection.xero_connection_id = chosen.id
    connection.grant_id = grant_id
    connection.practice_name = chosen.tenant_name or (existing.practice_name if existing else None)
    connection.scopes = tokens.scope or grant.scopes
    connection.authorised_by = authorised_by(xero_user_id, name, id_claims.get("email") or None)
    connection.updated_at = now
    connection.revoked_at = None
    if existing is None:
        connection.connected_at = now
    data = {
        "tenant_ref": session.tenant_ref,
        "xero_tenant_id": chosen.tenant_id,
        "practice_name": connection.practice_name,
    }
    try:
        with transaction() as tx:
            tx.save(grant)
            tx.save(connection)
            tx.save(outbox_event(vendor.vendor_id, event_type, data, now))
            schedule_first_sync(tx, vendor.vendor_id, session.tenant_ref, now)  # change feed (issue 6)
            tx.save(
                audit_record(
                    vendor.vendor_id,
                    event_type,
                    f"xero-user:{xero_user_id}",
                    tenant_ref=session.tenant_ref,
                    detail={"session_id": session.session_id, "xero_tenant_id": chosen.tenant_id},
                    now=now,
                )
            )
            tx.update(
                session,
                actions=[ConnectSession.status.set("completed")],
                condition=ConnectSession.status != "completed",
            )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            raise ConnectFailure("upstream_error", "the session was completed concurrently") from exc
        raise StorageUnavailable() from exc
    if previous_grant and previous_grant != grant_id:
        from chalicelib.tenants.disconnect import retire_grant_if_unused

        retire_grant_if_unused(previous_grant)
    return connection, event_type


def _fail(session: ConnectSession, failure: ConnectFailure, now: float) -> CallbackOutcome:
    logger.info(
        "connect failed for %s/%s: %s (%s)",
        session.vendor_id,
        session.tenant_ref,
        failure.code,
        failure.reason,
    )
    try:
        with transaction() as tx:
            tx.update(
                session,
                actions=[ConnectSession.status.set("failed"), ConnectSession.error_code.set(failure.code)],
            )
            tx.save(
                audit_record(
                    session.vendor_id,
                    "connection.connect_failed",
                    "system",
                    outcome="failure",
                    tenant_ref=session.tenant_ref,
                    detail={"session_id": session.session_id, "error": failure.code},
                    now=now,
                )
            )
    except PynamoDBException:
        logger.warning("could not record the failed connect of session %s", session.session_id)
    query = {"status": "error", "error": failure.code, "session_id": session.session_id}
    return CallbackOutcome(
        redirect_url=with_query(session.return_url, query), headers={"Set-Cookie": clear_cookie()}
    )


def with_query(url: str, params: dict[str, str]) -> str:
    """Append parameters to a registered return URL, keeping any query it already has."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
