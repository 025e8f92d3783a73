"""Xero identity (login.xero.com + identity.xero.com) on one host: discovery, JWKS, the
authorize pages, the token, revocation and userinfo endpoints (xero-reference.md §1.1-§1.9).

Routes stay thin: validation and consent live in sandbox/authorize.py, client authentication in
sandbox/client_auth.py, the grant lifecycle in sandbox/grants.py, token contents in
sandbox/claims.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request
from flask.typing import ResponseReturnValue

from sandbox import grants
from sandbox.authorize import (
    SCOPES,
    AuthorizeError,
    AuthorizeRequest,
    approve,
    connectable_practices,
    denial_url,
    find_user,
    parse_request,
)
from sandbox.bearer import bearer_claims, problem_response
from sandbox.client_auth import authenticate_client
from sandbox.fault_responses import after_work, arrive, before_work
from sandbox.oauth_errors import OAuthError
from sandbox.state import SandboxState, XeroUser, get_state
from sandbox.tokens import TokenError, jwks, rotate_signing_key

bp = Blueprint("sandbox_identity", __name__, template_folder="templates")

CLAIMS_SUPPORTED = [
    "sub", "iss", "aud", "exp", "nbf", "iat", "auth_time", "at_hash", "nonce", "sid", "idp", "amr",
    "xero_userid", "global_session_id", "preferred_username", "email", "given_name", "family_name",
    "name",
]  # fmt: skip
GRANT_KINDS = {"authorization_code": "authorization_code", "refresh_token": "refresh"}


def _issuer() -> str:
    """The issuer is whatever base URL the caller used, so tokens validate against discovery."""
    return request.root_url.rstrip("/")


@bp.get("/.well-known/openid-configuration")
def discovery() -> ResponseReturnValue:
    get_state().count("identity.discovery")
    issuer = _issuer()
    return jsonify(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/identity/connect/authorize",
            "token_endpoint": f"{issuer}/connect/token",
            "jwks_uri": f"{issuer}/.well-known/openid-configuration/jwks",
            "revocation_endpoint": f"{issuer}/connect/revocation",
            "userinfo_endpoint": f"{issuer}/connect/userinfo",
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": CLAIMS_SUPPORTED,
        }
    )


@bp.get("/.well-known/openid-configuration/jwks")
def jwks_document() -> ResponseReturnValue:
    get_state().count("identity.jwks")
    return jsonify(jwks())


@bp.route("/identity/connect/authorize", methods=["GET", "POST"])
def authorize() -> ResponseReturnValue:
    """Sign in (GET) → consent (POST user) → decision (POST user + decision [+ tenant_id])."""
    state = get_state()
    state.count("identity.authorize")
    try:
        auth_request = parse_request(state, request.values)
        email_or_id = request.form.get("user") if request.method == "POST" else None
        if not email_or_id:
            return _sign_in_page(state, auth_request)
        user = find_user(state, email_or_id)
        if user is None:
            raise AuthorizeError("Unknown user", "No Xero user has that email address.")
        decision = request.form.get("decision")
        if not decision:
            return _consent_page(state, auth_request, user)
        if decision == "cancel":
            return redirect(denial_url(auth_request))
        if decision != "allow":
            raise AuthorizeError("Invalid decision", "Choose Allow access or Cancel.")
        return redirect(approve(state, auth_request, user, request.form.get("tenant_id") or None))
    except AuthorizeError as exc:
        # Never redirect on a bad request: Xero keeps the user on its own error page (§1.3).
        return render_template("identity_error.html", error=exc), 400


def _sign_in_page(state: SandboxState, auth_request: AuthorizeRequest) -> str:
    with state.lock:
        users = sorted(state.users.values(), key=lambda u: u.email)
    return render_template(
        "identity_signin.html", action=request.path, params=auth_request.params, users=users
    )


def _consent_page(state: SandboxState, auth_request: AuthorizeRequest, user: XeroUser) -> str:
    return render_template(
        "identity_consent.html",
        action=request.path,
        params=auth_request.params,
        app=auth_request.app,
        user=user,
        scopes=[(scope, SCOPES[scope]) for scope in auth_request.scope],
        wants_practice=auth_request.wants_practice,
        practices=connectable_practices(state, user),
    )


@bp.post("/connect/token")
def token() -> ResponseReturnValue:
    state = get_state()
    grant_type = request.form.get("grant_type", "")
    kind = GRANT_KINDS.get(grant_type)
    state.count("identity.token")
    if kind:
        state.count(f"identity.token.{kind}")
    fault = state.faults.take(f"token.{kind}", "token") if kind else state.faults.take("token")
    early = before_work(fault)
    if early is not None:
        return early
    try:
        body = _token_body(state, grant_type)
    except OAuthError as exc:
        return after_work(fault, exc.response())
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return after_work(fault, response)


def _token_body(state: SandboxState, grant_type: str) -> dict[str, Any]:
    app = authenticate_client(state, request.headers.get("Authorization"), request.form)
    if grant_type == "authorization_code":
        return grants.exchange_code(state, app, request.form, _issuer())
    if grant_type == "refresh_token":
        return grants.refresh(state, app, request.form, _issuer())
    raise OAuthError("unsupported_grant_type")


@bp.post("/connect/revocation")
def revocation() -> ResponseReturnValue:
    state = get_state()
    fault, early = arrive(state, "identity.revocation", "revocation")
    if early is not None:
        return early
    try:
        app = authenticate_client(state, request.headers.get("Authorization"), request.form)
        token_value = request.form.get("token")
        if not token_value:
            raise OAuthError("invalid_request", "token is required")
        grants.revoke(state, app, token_value)
    except OAuthError as exc:
        return after_work(fault, exc.response())
    return after_work(fault, Response(status=200))  # empty 200, RFC 7009 §2.2 (§1.7)


@bp.get("/connect/userinfo")
def userinfo() -> ResponseReturnValue:
    state = get_state()
    state.count("identity.userinfo")
    try:
        claims = bearer_claims(state)
    except TokenError as exc:
        return problem_response(exc)
    with state.lock:
        user = state.users.get(str(claims.get("xero_userid")))
    if user is None:
        return problem_response(TokenError(401, "AuthenticationUnsuccessful", {"WWW-Authenticate": "Bearer"}))
    return jsonify(
        {
            "sub": claims["sub"],
            "xero_userid": user.user_id,
            "name": user.name,
            "given_name": user.given_name,
            "family_name": user.family_name,
            "preferred_username": user.email,
            "email": user.email,
        }
    )


@bp.post("/_sandbox/keys/rotate")
def rotate_keys() -> ResponseReturnValue:
    """Control API: sign with a new key; the JWKS keeps the previous one (tokens.py)."""
    return jsonify({"kid": rotate_signing_key()})
