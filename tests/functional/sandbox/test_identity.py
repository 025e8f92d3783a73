"""The sandbox's Xero identity service over loopback HTTP (xero-reference.md §1.1-§1.9)."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest
import requests
from joserfc import jws

from sandbox.server import SandboxServer
from tests.functional.sandbox.oauth_helpers import (
    ALICE,
    BLOGGS,
    BOB,
    CAROL,
    HARBOUR,
    SCOPE,
    TIMEOUT,
    AppCredentials,
    ClientAuth,
    advance_clock,
    arm_fault,
    authorize,
    authorize_params,
    authorize_url,
    callback_params,
    calls,
    connect,
    consent,
    decode,
    demo_app,
    exchange,
    list_connections,
    pkce_pair,
    refresh,
    register_app,
    revoke,
    submit_page,
    token_request,
    user_id,
)

MINUTE = 60
DAY = 86400


@pytest.fixture
def app(sandbox: SandboxServer) -> AppCredentials:
    return register_app(sandbox, name="Acme Broker")


def _grant_for(sandbox: SandboxServer, refresh_token: str) -> Any:
    with sandbox.state.lock:
        matches = [
            g
            for g in sandbox.state.grants.values()
            if refresh_token in (g.refresh_token, g.previous_refresh_token)
        ]
    assert len(matches) == 1
    return matches[0]


def _assert_error(response: requests.Response, error: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error


# -- discovery and keys ---------------------------------------------------------------------


def test_discovery_names_every_endpoint_on_the_callers_host(sandbox: SandboxServer) -> None:
    body = requests.get(f"{sandbox.url}/.well-known/openid-configuration", timeout=TIMEOUT).json()

    issuer = sandbox.url
    assert body["issuer"] == issuer
    assert body["authorization_endpoint"] == f"{issuer}/identity/connect/authorize"
    assert body["token_endpoint"] == f"{issuer}/connect/token"
    assert body["jwks_uri"] == f"{issuer}/.well-known/openid-configuration/jwks"
    assert body["revocation_endpoint"] == f"{issuer}/connect/revocation"
    assert body["userinfo_endpoint"] == f"{issuer}/connect/userinfo"
    assert body["response_types_supported"] == ["code"]
    assert body["id_token_signing_alg_values_supported"] == ["RS256"]
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert {"authorization_code", "refresh_token"} <= set(body["grant_types_supported"])
    assert {"openid", "offline_access", "practicemanager.client"} <= set(body["scopes_supported"])
    assert {"xero_userid", "email", "nonce"} <= set(body["claims_supported"])
    assert body["subject_types_supported"] == ["public"]


def test_issuer_follows_the_host_the_caller_used(sandbox: SandboxServer) -> None:
    localhost_url = sandbox.url.replace("127.0.0.1", "localhost")
    body = requests.get(f"{localhost_url}/.well-known/openid-configuration", timeout=TIMEOUT).json()

    assert body["issuer"] == localhost_url
    assert body["token_endpoint"] == f"{localhost_url}/connect/token"


def test_jwks_publishes_rs256_public_keys_only(sandbox: SandboxServer) -> None:
    keys = requests.get(f"{sandbox.url}/.well-known/openid-configuration/jwks", timeout=TIMEOUT).json()[
        "keys"
    ]

    assert keys
    for key in keys:
        assert key["kty"] == "RSA"
        assert key["alg"] == "RS256"
        assert key["kid"]
        assert "d" not in key  # no private part


def test_tokens_verify_against_the_jwks_with_xero_claims(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS, nonce="n-0S6_WzA2Mj")

    access = decode(sandbox, tokens["access_token"], audience=f"{sandbox.url}/resources")
    id_claims = decode(sandbox, tokens["id_token"], audience=app.client_id)

    alice = user_id(sandbox, ALICE)
    assert access["client_id"] == app.client_id
    assert access["xero_userid"] == alice
    assert access["scope"] == SCOPE.split()  # a JSON array (§1.9)
    assert access["idp"] == "xero"
    assert access["amr"] == ["pwd"]
    assert access["exp"] - access["nbf"] == 1800
    connections = list_connections(sandbox, tokens["access_token"]).json()
    assert access["authentication_event_id"] == connections[0]["authEventId"]
    for claim in ("sub", "auth_time", "global_session_id", "jti"):
        assert access[claim]
    assert id_claims["nonce"] == "n-0S6_WzA2Mj"
    assert id_claims["xero_userid"] == alice
    assert id_claims["email"] == id_claims["preferred_username"] == ALICE
    assert (id_claims["given_name"], id_claims["family_name"]) == ("Alice", "Adviser")
    assert id_claims["sub"] == access["sub"]
    assert id_claims["global_session_id"] == access["global_session_id"]
    assert id_claims["exp"] - id_claims["iat"] == 300
    assert id_claims["sid"]
    assert "authentication_event_id" not in id_claims  # only the access token carries it (§1.8)
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    assert id_claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def test_token_times_follow_the_sandbox_clock(sandbox: SandboxServer, app: AppCredentials) -> None:
    advance_clock(sandbox, 10 * DAY)
    tokens = connect(sandbox, app, ALICE, BLOGGS)

    access = decode(sandbox, tokens["access_token"], audience=f"{sandbox.url}/resources")

    assert abs(access["nbf"] - (time.time() + 10 * DAY)) < 60


def test_id_token_and_refresh_token_only_when_asked_for(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS, scope="practicemanager.client")

    assert "id_token" not in tokens
    assert "refresh_token" not in tokens
    assert tokens["scope"] == "practicemanager.client"
    assert tokens["token_type"] == "Bearer"


def test_key_rotation_keeps_old_tokens_verifiable(sandbox: SandboxServer, app: AppCredentials) -> None:
    before = connect(sandbox, app, ALICE, BLOGGS)
    old_kid = jws.extract_compact(before["access_token"].encode()).protected["kid"]

    response = requests.post(f"{sandbox.url}/_sandbox/keys/rotate", timeout=TIMEOUT)
    new_kid = response.json()["kid"]
    after = refresh(sandbox, app, before["refresh_token"]).json()

    keys = requests.get(f"{sandbox.url}/.well-known/openid-configuration/jwks", timeout=TIMEOUT).json()
    assert {old_kid, new_kid} <= {k["kid"] for k in keys["keys"]}
    assert new_kid != old_kid
    assert jws.extract_compact(after["access_token"].encode()).protected["kid"] == new_kid
    decode(sandbox, before["access_token"], audience=f"{sandbox.url}/resources")
    decode(sandbox, after["id_token"], audience=app.client_id)
    assert list_connections(sandbox, before["access_token"]).status_code == 200


# -- the authorize pages --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"client_id": "NOT-A-CLIENT"}, "Unknown app"),
        ({"redirect_uri": "http://localhost:8000/oauth/callback/"}, "Invalid redirect_uri"),
        ({"redirect_uri": "http://localhost:8000/oauth/CALLBACK"}, "Invalid redirect_uri"),
        ({"redirect_uri": "https://evil.example/oauth/callback"}, "Invalid redirect_uri"),
        ({"redirect_uri": None}, "Invalid redirect_uri"),
        ({"response_type": "token"}, "Unsupported response_type"),
        ({"code_challenge": "abc", "code_challenge_method": "plain"}, "Invalid code_challenge"),
        ({"code_challenge": "abc"}, "Invalid code_challenge"),
        ({"scope": "openid accounting.transactions"}, "Invalid scope"),
        ({"scope": ""}, "Invalid scope"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_authorize_requests_show_an_error_page_and_never_redirect(
    sandbox: SandboxServer, app: AppCredentials, change: dict[str, str | None], reason: str, method: str
) -> None:
    params = {k: v for k, v in (authorize_params(app) | change).items() if v is not None}
    if method == "POST":
        params |= {"user": ALICE, "tenant_id": BLOGGS, "decision": "allow"}

    response = requests.request(
        method,
        authorize_url(sandbox),
        params=params if method == "GET" else None,
        data=params if method == "POST" else None,
        allow_redirects=False,
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    assert reason in response.text
    assert not sandbox.state.codes
    assert not sandbox.state.connections


def test_sign_in_page_lists_the_users_and_carries_the_request(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    response = requests.get(
        authorize_url(sandbox), params=authorize_params(app, nonce="abc"), timeout=TIMEOUT
    )

    assert response.status_code == 200
    assert "Sign in to Xero" in response.text
    for email in (ALICE, BOB, CAROL):
        assert email in response.text
    assert 'name="state" value="state-123"' in response.text
    assert 'name="nonce" value="abc"' in response.text
    # Self-contained: no scripts or external assets.
    assert "<script" not in response.text
    assert "<link" not in response.text
    assert "src=" not in response.text


def test_consent_page_names_the_app_scopes_and_connectable_practices(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    sign_in = requests.get(authorize_url(sandbox), params=authorize_params(app), timeout=TIMEOUT)

    page = submit_page(sandbox, sign_in, user=ALICE)

    assert page.status_code == 200
    assert "Acme Broker" in page.text
    assert "Allow access" in page.text
    assert "Cancel" in page.text
    assert "View and manage your Xero Practice Manager clients and client groups" in page.text
    assert "View your Xero Practice Manager staff" in page.text
    assert "Bloggs &amp; Co Chartered Accountants" in page.text
    assert "Harbour Tax Advisers" in page.text
    assert "don't have access" not in page.text


def test_a_browser_can_click_through_to_the_callback(sandbox: SandboxServer, app: AppCredentials) -> None:
    sign_in = requests.get(authorize_url(sandbox), params=authorize_params(app), timeout=TIMEOUT)
    consent_page = submit_page(sandbox, sign_in, user=CAROL)

    callback = submit_page(sandbox, consent_page, "allow")

    query = callback_params(callback)
    assert callback.headers["Location"].startswith(app.redirect_uri + "?")
    assert query["state"] == "state-123"
    assert query["scope"] == SCOPE
    tokens = exchange(sandbox, app, query["code"]).json()
    tenants = [c["tenantId"] for c in list_connections(sandbox, tokens["access_token"]).json()]
    assert tenants == [HARBOUR]  # Carol's only connectable practice, preselected


def test_cancel_redirects_with_access_denied_and_the_state(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    response = consent(sandbox, app, ALICE, BLOGGS, decision="cancel", state="xyz")

    assert callback_params(response) == {"error": "access_denied", "state": "xyz"}
    assert not sandbox.state.codes
    assert not sandbox.state.connections


def test_user_without_the_xpm_permission_sees_why_and_can_still_allow(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    sign_in = requests.get(authorize_url(sandbox), params=authorize_params(app), timeout=TIMEOUT)
    page = submit_page(sandbox, sign_in, user=BOB)

    assert "You don't have access to connect any Xero Practice Manager accounts" in page.text
    assert '"Connect third-party add-ons"' in page.text
    assert 'name="tenant_id"' not in page.text

    callback = submit_page(sandbox, page, "allow")
    tokens = exchange(sandbox, app, callback_params(callback)["code"]).json()
    event = decode(sandbox, tokens["access_token"], audience=f"{sandbox.url}/resources")[
        "authentication_event_id"
    ]
    listed = list_connections(sandbox, tokens["access_token"], auth_event_id=event).json()
    assert [c for c in listed if c["tenantType"] == "PRACTICEMANAGER"] == []


@pytest.mark.parametrize(("email", "tenant_id"), [(BOB, BLOGGS), (CAROL, BLOGGS), (ALICE, "not-a-tenant")])
def test_consent_to_a_practice_the_user_cannot_connect_is_refused(
    sandbox: SandboxServer, app: AppCredentials, email: str, tenant_id: str
) -> None:
    response = consent(sandbox, app, email, tenant_id)

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert not sandbox.state.connections


def test_unknown_user_is_refused(sandbox: SandboxServer, app: AppCredentials) -> None:
    response = consent(sandbox, app, "mallory@example.com", BLOGGS)

    assert response.status_code == 400
    assert "Unknown user" in response.text


def test_user_may_be_named_by_xero_user_id(sandbox: SandboxServer, app: AppCredentials) -> None:
    code = authorize(sandbox, app, user_id(sandbox, CAROL), HARBOUR)

    assert sandbox.state.codes[code].user_id == user_id(sandbox, CAROL)


def test_sign_in_only_scopes_skip_the_practice_picker(sandbox: SandboxServer, app: AppCredentials) -> None:
    params = authorize_params(app, scope="openid profile email")
    sign_in = requests.get(authorize_url(sandbox), params=params, timeout=TIMEOUT)
    page = submit_page(sandbox, sign_in, user=ALICE)

    assert 'name="tenant_id"' not in page.text
    assert consent(sandbox, app, ALICE, BLOGGS, scope="openid profile email").status_code == 400
    tokens = connect(sandbox, app, ALICE, scope="openid profile email")
    assert list_connections(sandbox, tokens["access_token"]).json() == []


def test_callback_keeps_a_query_already_in_the_redirect_uri(sandbox: SandboxServer) -> None:
    app = register_app(sandbox, redirect_uris=["http://localhost:9000/cb?tenant=acme"])

    response = consent(sandbox, app, ALICE, BLOGGS)

    assert callback_params(response)["tenant"] == "acme"
    assert callback_params(response)["code"]


def test_the_seeded_demo_app_works_out_of_the_box(sandbox: SandboxServer) -> None:
    app = demo_app(sandbox)

    tokens = connect(sandbox, app, ALICE, BLOGGS)

    assert decode(sandbox, tokens["id_token"], audience="sandbox-demo-client")["email"] == ALICE


def test_an_app_registered_through_the_control_api_can_connect(sandbox: SandboxServer) -> None:
    response = requests.post(
        f"{sandbox.url}/_sandbox/apps",
        json={
            "name": "Registered Via Control",
            "redirect_uris": ["https://broker.example/oauth/callback"],
            "client_id": "BROKER-CLIENT",
            "client_secret": "broker-secret-for-tests",
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 201
    app = AppCredentials(
        "BROKER-CLIENT", "broker-secret-for-tests", "https://broker.example/oauth/callback", ""
    )
    sign_in = requests.get(authorize_url(sandbox), params=authorize_params(app), timeout=TIMEOUT)

    assert "Registered Via Control" in submit_page(sandbox, sign_in, user=ALICE).text
    tokens = connect(sandbox, app, ALICE, HARBOUR)
    assert decode(sandbox, tokens["id_token"], audience="BROKER-CLIENT")["email"] == ALICE
    assert [c["tenantId"] for c in list_connections(sandbox, tokens["access_token"]).json()] == [HARBOUR]


# -- code exchange ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_code_exchange_with_either_client_auth_method(
    sandbox: SandboxServer, app: AppCredentials, auth: ClientAuth
) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)

    response = exchange(sandbox, app, code, auth=auth)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id_token", "access_token", "expires_in", "token_type", "refresh_token", "scope"}
    assert body["expires_in"] == 1800
    assert body["token_type"] == "Bearer"
    assert body["scope"] == SCOPE
    assert len(body["refresh_token"]) >= 43  # >= 32 random bytes, base64url
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("basic", "form_credentials"),
    [
        ("unknown-client", "none"),
        ("wrong-secret", "none"),
        ("right", "id+secret"),  # two methods at once
        ("none", "none"),
        ("none", "id"),  # client_secret_post without the secret
        ("right", "other-id"),
    ],
)
def test_bad_client_credentials_are_invalid_client(
    sandbox: SandboxServer, app: AppCredentials, basic: str, form_credentials: str
) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri}
    form |= {
        "none": {},
        "id": {"client_id": app.client_id},
        "other-id": {"client_id": "SOMEONE-ELSE"},
        "id+secret": {"client_id": app.client_id, "client_secret": app.client_secret},
    }[form_credentials]
    auth = {
        "none": None,
        "right": (app.client_id, app.client_secret),
        "wrong-secret": (app.client_id, "wrong"),
        "unknown-client": ("NOT-A-CLIENT", app.client_secret),
    }[basic]

    response = requests.post(f"{sandbox.url}/connect/token", data=form, auth=auth, timeout=TIMEOUT)

    _assert_error(response, "invalid_client")
    assert not sandbox.state.grants


def test_basic_auth_tolerates_its_own_client_id_in_the_form(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri}

    response = requests.post(
        f"{sandbox.url}/connect/token",
        data=form | {"client_id": app.client_id},
        auth=(app.client_id, app.client_secret),
        timeout=TIMEOUT,
    )

    assert response.status_code == 200, response.text


def test_wrong_secret_in_the_form_is_invalid_client(sandbox: SandboxServer, app: AppCredentials) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)
    wrong = AppCredentials(app.client_id, "not-the-secret", app.redirect_uri, app.name)

    _assert_error(exchange(sandbox, wrong, code, auth="post"), "invalid_client")


def test_a_code_works_once(sandbox: SandboxServer, app: AppCredentials) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)

    assert exchange(sandbox, app, code).status_code == 200
    _assert_error(exchange(sandbox, app, code), "invalid_grant")


def test_a_code_expires_on_the_sandbox_clock(sandbox: SandboxServer, app: AppCredentials) -> None:
    fresh = authorize(sandbox, app, ALICE, BLOGGS)
    stale = authorize(sandbox, app, ALICE, BLOGGS)

    advance_clock(sandbox, 290)
    assert exchange(sandbox, app, fresh).status_code == 200
    advance_clock(sandbox, 20)  # past the 5-minute code lifetime
    _assert_error(exchange(sandbox, app, stale), "invalid_grant")


@pytest.mark.parametrize("redirect_uri", ["http://localhost:8000/oauth/callback/", ""])
def test_the_exchange_needs_the_identical_redirect_uri(
    sandbox: SandboxServer, app: AppCredentials, redirect_uri: str
) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)
    form = {"grant_type": "authorization_code", "code": code}
    if redirect_uri:
        form["redirect_uri"] = redirect_uri

    _assert_error(token_request(sandbox, app, form), "invalid_grant")


def test_a_code_is_bound_to_its_app(sandbox: SandboxServer, app: AppCredentials) -> None:
    other = register_app(sandbox, name="Other app")
    code = authorize(sandbox, app, ALICE, BLOGGS)

    _assert_error(exchange(sandbox, other, code, redirect_uri=app.redirect_uri), "invalid_grant")
    assert exchange(sandbox, app, code).status_code == 200  # not burnt by the other app


def test_an_unknown_code_is_invalid_grant(sandbox: SandboxServer, app: AppCredentials) -> None:
    _assert_error(exchange(sandbox, app, "no-such-code"), "invalid_grant")


def test_pkce_with_the_right_verifier(sandbox: SandboxServer, app: AppCredentials) -> None:
    verifier, challenge = pkce_pair()
    code = authorize(sandbox, app, ALICE, BLOGGS, code_challenge=challenge)

    response = exchange(sandbox, app, code, code_verifier=verifier)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "verifier",
    [None, "x" * 43, "short-but-valid-chars", "!" * 50],
    ids=["missing", "wrong", "too-short", "bad-chars"],
)
def test_pkce_with_a_bad_or_missing_verifier_is_invalid_grant(
    sandbox: SandboxServer, app: AppCredentials, verifier: str | None
) -> None:
    _, challenge = pkce_pair()
    code = authorize(sandbox, app, ALICE, BLOGGS, code_challenge=challenge)

    _assert_error(exchange(sandbox, app, code, code_verifier=verifier), "invalid_grant")
    assert not sandbox.state.grants


@pytest.mark.parametrize("grant_type", ["client_credentials", "password", ""])
def test_other_grant_types_are_unsupported(
    sandbox: SandboxServer, app: AppCredentials, grant_type: str
) -> None:
    _assert_error(token_request(sandbox, app, {"grant_type": grant_type}), "unsupported_grant_type")


# -- refresh ----------------------------------------------------------------------------------


def test_refresh_rotates_and_keeps_the_auth_event(sandbox: SandboxServer, app: AppCredentials) -> None:
    first = connect(sandbox, app, ALICE, BLOGGS, nonce="only-at-login")

    response = refresh(sandbox, app, first["refresh_token"])

    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 1800
    resources = f"{sandbox.url}/resources"
    old_access = decode(sandbox, first["access_token"], audience=resources)
    new_access = decode(sandbox, second["access_token"], audience=resources)
    assert new_access["authentication_event_id"] == old_access["authentication_event_id"]
    assert new_access["scope"] == old_access["scope"]
    id_claims = decode(sandbox, second["id_token"], audience=app.client_id)
    assert "nonce" not in id_claims
    assert _grant_for(sandbox, second["refresh_token"]).refresh_token == second["refresh_token"]


def test_refresh_with_post_client_auth(sandbox: SandboxServer, app: AppCredentials) -> None:
    first = connect(sandbox, app, ALICE, BLOGGS)

    assert refresh(sandbox, app, first["refresh_token"], auth="post").status_code == 200


def test_grace_reissue_gives_a_new_pair_once(
    sandbox: SandboxServer, app: AppCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox.state.config, "grace_mode", "reissue")
    t0 = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    t1 = refresh(sandbox, app, t0).json()["refresh_token"]

    advance_clock(sandbox, 10 * MINUTE)
    replay = refresh(sandbox, app, t0)

    assert replay.status_code == 200
    t2 = replay.json()["refresh_token"]
    assert t2 not in (t0, t1)
    assert _grant_for(sandbox, t2).refresh_token == t2  # the latest is current
    _assert_error(refresh(sandbox, app, t0), "invalid_grant")  # the replay consumed it
    assert refresh(sandbox, app, t2).status_code == 200


def test_grace_same_returns_the_first_refresh_result_again(
    sandbox: SandboxServer, app: AppCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox.state.config, "grace_mode", "same")
    t0 = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    first = refresh(sandbox, app, t0).json()

    advance_clock(sandbox, 10 * MINUTE)
    replay = refresh(sandbox, app, t0)

    assert replay.status_code == 200
    assert replay.json() == first
    assert refresh(sandbox, app, first["refresh_token"]).status_code == 200


@pytest.mark.parametrize("mode", ["reissue", "same"])
def test_the_previous_token_dies_after_the_grace_window(
    sandbox: SandboxServer, app: AppCredentials, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setattr(sandbox.state.config, "grace_mode", mode)
    t0 = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    t1 = refresh(sandbox, app, t0).json()["refresh_token"]

    advance_clock(sandbox, 31 * MINUTE)

    _assert_error(refresh(sandbox, app, t0), "invalid_grant")
    assert refresh(sandbox, app, t1).status_code == 200


def test_tokens_older_than_the_previous_one_are_dead(sandbox: SandboxServer, app: AppCredentials) -> None:
    t0 = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    t1 = refresh(sandbox, app, t0).json()["refresh_token"]
    refresh(sandbox, app, t1)

    _assert_error(refresh(sandbox, app, t0), "invalid_grant")


def test_an_unused_refresh_token_expires_after_60_days(sandbox: SandboxServer, app: AppCredentials) -> None:
    token = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]

    advance_clock(sandbox, 61 * DAY)
    response = refresh(sandbox, app, token)

    _assert_error(response, "invalid_grant")
    assert response.json()["error_description"] == "Token has been expired or revoked."


def test_refreshing_inside_60_days_keeps_the_chain_alive(sandbox: SandboxServer, app: AppCredentials) -> None:
    token = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]

    advance_clock(sandbox, 59 * DAY)
    token = refresh(sandbox, app, token).json()["refresh_token"]
    advance_clock(sandbox, 59 * DAY)

    assert refresh(sandbox, app, token).status_code == 200


def test_another_apps_credentials_cannot_refresh(sandbox: SandboxServer, app: AppCredentials) -> None:
    other = register_app(sandbox, name="Other app")
    token = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]

    _assert_error(refresh(sandbox, other, token), "invalid_grant")
    assert refresh(sandbox, app, token).status_code == 200  # untouched by the attempt


def test_an_unknown_refresh_token_is_invalid_grant(sandbox: SandboxServer, app: AppCredentials) -> None:
    _assert_error(refresh(sandbox, app, "not-a-token"), "invalid_grant")


# -- revocation -------------------------------------------------------------------------------


def test_revocation_kills_the_tokens_and_all_the_users_connections_to_the_app(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    other = register_app(sandbox, name="Other app")
    bloggs = connect(sandbox, app, ALICE, BLOGGS)
    harbour = connect(sandbox, app, ALICE, HARBOUR)
    elsewhere = connect(sandbox, other, ALICE, BLOGGS)
    carol = connect(sandbox, app, CAROL, HARBOUR)

    response = revoke(sandbox, app, bloggs["refresh_token"])

    assert response.status_code == 200
    assert response.content == b""
    _assert_error(refresh(sandbox, app, bloggs["refresh_token"]), "invalid_grant")
    _assert_error(refresh(sandbox, app, harbour["refresh_token"]), "invalid_grant")
    assert list_connections(sandbox, harbour["access_token"]).json() == []
    # Another app's connections and another user's stay.
    assert [c["tenantId"] for c in list_connections(sandbox, elsewhere["access_token"]).json()] == [BLOGGS]
    assert refresh(sandbox, other, elsewhere["refresh_token"]).status_code == 200
    assert [c["tenantId"] for c in list_connections(sandbox, carol["access_token"]).json()] == [HARBOUR]
    assert calls(sandbox)["identity.revocation"] == 1


def test_revoking_an_unknown_token_answers_200(sandbox: SandboxServer, app: AppCredentials) -> None:
    response = revoke(sandbox, app, "nothing-like-a-token")

    assert response.status_code == 200


def test_an_app_cannot_revoke_another_apps_token(sandbox: SandboxServer, app: AppCredentials) -> None:
    other = register_app(sandbox, name="Other app")
    tokens = connect(sandbox, app, ALICE, BLOGGS)

    assert revoke(sandbox, other, tokens["refresh_token"]).status_code == 200

    assert refresh(sandbox, app, tokens["refresh_token"]).status_code == 200
    assert len(list_connections(sandbox, tokens["access_token"]).json()) == 1


def test_revocation_needs_valid_client_credentials_and_a_token(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    wrong = AppCredentials(app.client_id, "wrong", app.redirect_uri, app.name)

    _assert_error(revoke(sandbox, wrong, tokens["refresh_token"]), "invalid_client")
    missing = requests.post(
        f"{sandbox.url}/connect/revocation", auth=(app.client_id, app.client_secret), timeout=TIMEOUT
    )
    _assert_error(missing, "invalid_request")
    assert refresh(sandbox, app, tokens["refresh_token"]).status_code == 200


# -- userinfo ---------------------------------------------------------------------------------


def test_userinfo_describes_the_signed_in_user(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, CAROL, HARBOUR)

    response = requests.get(
        f"{sandbox.url}/connect/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 200
    sub = decode(sandbox, tokens["id_token"], audience=app.client_id)["sub"]
    assert response.json() == {
        "sub": sub,
        "xero_userid": user_id(sandbox, CAROL),
        "name": "Carol Controller",
        "given_name": "Carol",
        "family_name": "Controller",
        "preferred_username": CAROL,
        "email": CAROL,
    }


def test_userinfo_refuses_missing_and_expired_tokens(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, CAROL, HARBOUR)
    url = f"{sandbox.url}/connect/userinfo"

    missing = requests.get(url, timeout=TIMEOUT)
    advance_clock(sandbox, 31 * MINUTE)
    expired = requests.get(
        url, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=TIMEOUT
    )

    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["detail"] == "AuthenticationUnsuccessful"
    assert expired.status_code == 401
    assert expired.json()["detail"].startswith("TokenExpired")


# -- call counters ------------------------------------------------------------------------------


def test_calls_are_counted_per_endpoint(sandbox: SandboxServer, app: AppCredentials) -> None:
    requests.get(f"{sandbox.url}/.well-known/openid-configuration", timeout=TIMEOUT)
    requests.get(authorize_url(sandbox), params=authorize_params(app), timeout=TIMEOUT)
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    refresh(sandbox, app, tokens["refresh_token"])
    token_request(sandbox, app, {"grant_type": "password"})

    counted = calls(sandbox)

    assert counted["identity.discovery"] == 1
    assert counted["identity.authorize"] == 2
    assert counted["identity.token"] == 3
    assert counted["identity.token.authorization_code"] == 1
    assert counted["identity.token.refresh"] == 1


# -- faults -----------------------------------------------------------------------------------


def test_token_server_errors_then_success_without_state_change(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)
    arm_fault(sandbox, "token.authorization_code", "server_error", count=2)

    failures = [exchange(sandbox, app, code) for _ in range(2)]
    success = exchange(sandbox, app, code)

    assert [r.status_code for r in failures] == [503, 503]
    assert failures[0].headers["Content-Type"].startswith("text/html")
    assert success.status_code == 200  # the code was not consumed by the failures
    assert calls(sandbox)["identity.token.authorization_code"] == 3


def test_server_error_status_is_configurable_and_token_target_covers_refresh(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    token = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    arm_fault(sandbox, "token", "server_error", status=500)

    assert refresh(sandbox, app, token).status_code == 500
    assert refresh(sandbox, app, token).status_code == 200  # still current: nothing rotated


def test_invalid_grant_fault_changes_nothing(sandbox: SandboxServer, app: AppCredentials) -> None:
    token = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    arm_fault(sandbox, "token.refresh", "invalid_grant")

    _assert_error(refresh(sandbox, app, token), "invalid_grant")
    assert _grant_for(sandbox, token).refresh_token == token
    assert refresh(sandbox, app, token).status_code == 200


def test_rate_limit_fault_answers_429_with_retry_after(sandbox: SandboxServer, app: AppCredentials) -> None:
    token = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    arm_fault(sandbox, "token.refresh", "rate_limit", retry_after=7)

    response = refresh(sandbox, app, token)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-Rate-Limit-Problem"] == "minute"
    assert _grant_for(sandbox, token).refresh_token == token


def test_dropped_refresh_response_still_rotates(sandbox: SandboxServer, app: AppCredentials) -> None:
    t0 = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    arm_fault(sandbox, "token.refresh", "drop_response")

    with pytest.raises(requests.exceptions.ConnectionError):
        refresh(sandbox, app, t0)

    grant = _grant_for(sandbox, t0)
    assert grant.refresh_token != t0  # Xero rotated; the answer was lost
    assert grant.previous_refresh_token == t0
    recovered = refresh(sandbox, app, t0)  # the grace window rescues the client (§1.5)
    assert recovered.status_code == 200
    assert (
        _grant_for(sandbox, recovered.json()["refresh_token"]).refresh_token
        == recovered.json()["refresh_token"]
    )


def test_after_a_dropped_refresh_the_old_token_only_lives_through_grace(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    t0 = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    arm_fault(sandbox, "token.refresh", "drop_response")
    with pytest.raises(requests.exceptions.ConnectionError):
        refresh(sandbox, app, t0)
    current = _grant_for(sandbox, t0).refresh_token

    advance_clock(sandbox, 31 * MINUTE)

    _assert_error(refresh(sandbox, app, t0), "invalid_grant")
    assert refresh(sandbox, app, current).status_code == 200


def test_dropped_code_exchange_consumes_the_code(sandbox: SandboxServer, app: AppCredentials) -> None:
    code = authorize(sandbox, app, ALICE, BLOGGS)
    arm_fault(sandbox, "token.authorization_code", "drop_response")

    with pytest.raises(requests.exceptions.ConnectionError):
        exchange(sandbox, app, code)

    assert len(sandbox.state.grants) == 1
    _assert_error(exchange(sandbox, app, code), "invalid_grant")


def test_timeout_fault_makes_the_client_give_up_while_xero_rotates(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    t0 = connect(sandbox, app, ALICE, BLOGGS)["refresh_token"]
    arm_fault(sandbox, "token.refresh", "timeout", seconds=1)

    with pytest.raises(requests.exceptions.ReadTimeout):
        refresh(sandbox, app, t0, timeout=0.3)

    deadline = time.monotonic() + 5
    while _grant_for(sandbox, t0).refresh_token == t0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _grant_for(sandbox, t0).previous_refresh_token == t0  # the slow call still rotated
    assert refresh(sandbox, app, t0).status_code == 200  # recoverable through grace


def test_revocation_faults(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    arm_fault(sandbox, "revocation", "server_error")

    assert revoke(sandbox, app, tokens["refresh_token"]).status_code == 503
    assert refresh(sandbox, app, tokens["refresh_token"]).status_code == 200
    arm_fault(sandbox, "revocation", "drop_response")
    current = _grant_for(sandbox, tokens["refresh_token"]).refresh_token
    with pytest.raises(requests.exceptions.ConnectionError):
        revoke(sandbox, app, current)
    _assert_error(refresh(sandbox, app, current), "invalid_grant")  # revoked even so
