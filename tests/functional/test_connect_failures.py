"""Every way the connect journey can fail, and the single-flight refresh behind later calls."""

from __future__ import annotations

import threading
import time

import requests

from chalicelib.oauth.errors import InvalidGrant
from chalicelib.oauth.models import ConnectSession, Grant, OAuthState
from chalicelib.oauth.refresh import refresh_grant, valid_access_token
from chalicelib.tenants.models import Connection
from chalicelib.webhooks.models import Event
from tests.functional.broker import BrokerUnderTest, query_of, text_of
from tests.functional.sandbox.oauth_helpers import arm_fault, calls


def _connected_grant(broker: BrokerUnderTest) -> Grant:
    broker.connect("firm-1")
    return Grant.get(Connection.get(broker.vendor.vendor_id, "firm-1").grant_id)


def test_expired_and_used_links_get_410_pages(broker: BrokerUnderTest) -> None:
    session = broker.create_session("firm-1")
    ConnectSession.get(session["session_id"]).update(actions=[ConnectSession.expires_at.set(time.time() - 1)])
    for response in (
        broker.client.http.get(f"/connect/{session['session_id']}"),
        broker.client.http.post(
            f"/connect/{session['session_id']}/start",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ):
        assert response.status_code == 410
        assert b"expired" in response.body
    query = broker.connect("firm-2")
    used = broker.client.http.get(f"/connect/{query['session_id'][0]}")
    assert used.status_code == 410
    assert broker.client.http.get("/connect/cs_doesnotexistdoesnotexist").status_code == 404


def test_an_expired_state_is_refused_without_redirect(broker: BrokerUnderTest) -> None:
    session = broker.create_session("firm-1")
    callback_url = broker.consent(broker.start(session["session_id"]))
    state = query_of(callback_url)["state"][0]
    OAuthState.get(state).update(actions=[OAuthState.expires_at.set(time.time() - 1)])
    response = broker.callback(callback_url)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_token_endpoint_failure_redirects_upstream_error_and_explains(broker: BrokerUnderTest) -> None:
    arm_fault(broker.sandbox, "token.authorization_code", "server_error", status=503)
    query = broker.connect("firm-1")
    assert query["error"] == ["upstream_error"]
    page = broker.client.http.get(f"/connect/{query['session_id'][0]}")
    assert page.status_code == 200  # the firm can try again with the same link
    assert "Xero did not complete the connection" in text_of(page.body)
    assert not list(Connection.query(broker.vendor.vendor_id))


def test_connections_endpoint_failure_is_upstream_error(broker: BrokerUnderTest) -> None:
    arm_fault(broker.sandbox, "connections", "server_error", count=2)
    assert broker.connect("firm-1")["error"] == ["upstream_error"]


def test_mix_up_iss_in_the_callback_is_refused(broker: BrokerUnderTest) -> None:
    session = broker.create_session("firm-1")
    callback_url = broker.consent(broker.start(session["session_id"]))
    response = broker.callback(callback_url + "&iss=https%3A%2F%2Fevil.example")
    assert query_of(response.headers["Location"])["error"] == ["upstream_error"]


def test_xero_key_rotation_refetches_jwks_once(broker: BrokerUnderTest) -> None:
    broker.connect("firm-1")
    before = calls(broker.sandbox)
    requests.post(f"{broker.sandbox.url}/_sandbox/keys/rotate", timeout=5).raise_for_status()
    assert broker.connect("firm-2")["status"] == ["connected"]
    after = calls(broker.sandbox)
    assert after.get("identity.jwks", 0) - before.get("identity.jwks", 0) == 1
    assert after.get("identity.discovery", 0) == before.get("identity.discovery", 0)


def test_an_expired_access_token_is_refreshed_once_and_persisted_first(broker: BrokerUnderTest) -> None:
    grant = _connected_grant(broker)
    grant.update(actions=[Grant.access_expires_at.set(time.time() + 30)])  # under a minute left
    before = calls(broker.sandbox).get("identity.token.refresh", 0)
    token, version = valid_access_token(grant.grant_id)
    assert calls(broker.sandbox).get("identity.token.refresh", 0) == before + 1
    stored = Grant.get(grant.grant_id)
    assert stored.version == version == grant.version + 1
    assert stored.lease_owner is None
    again, _ = valid_access_token(grant.grant_id)
    assert again == token  # fresh now: no second refresh
    assert calls(broker.sandbox).get("identity.token.refresh", 0) == before + 1


def test_concurrent_refreshes_are_single_flight(broker: BrokerUnderTest) -> None:
    grant = _connected_grant(broker)
    before = calls(broker.sandbox).get("identity.token.refresh", 0)
    results: list[str] = []
    errors: list[Exception] = []

    def worker() -> None:
        try:
            tokens, _ = refresh_grant(grant.grant_id, seen_version=int(grant.version))
            results.append(tokens.access_token)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert calls(broker.sandbox).get("identity.token.refresh", 0) == before + 1
    assert len(set(results)) == 1


def test_invalid_grant_marks_connections_needing_reauthorisation(broker: BrokerUnderTest) -> None:
    grant = _connected_grant(broker)
    arm_fault(broker.sandbox, "token.refresh", "invalid_grant")
    try:
        refresh_grant(grant.grant_id)
    except InvalidGrant as error:
        assert error.code == "connection_not_active"
    else:
        raise AssertionError("invalid_grant was not raised")
    assert Grant.get(grant.grant_id).status == "needs_reauthorisation"
    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert connection.status == "needs_reauthorisation"
    assert connection.status_reason == "revoked"
    assert [e.type for e in Event.query(broker.vendor.vendor_id)][-1] == "connection.needs_reauthorisation"
    status = broker.signed("GET", "/v1/tenants/firm-1/connection").json_body
    assert status["status"] == "needs_reauthorisation"
    # The same connect flow reauthorises it in place.
    assert broker.connect("firm-1", mode="reauthorise")["status"] == ["connected"]
    assert Connection.get(broker.vendor.vendor_id, "firm-1").status == "active"


def test_a_transient_refresh_failure_releases_the_lease(broker: BrokerUnderTest) -> None:
    grant = _connected_grant(broker)
    arm_fault(broker.sandbox, "token.refresh", "server_error")
    try:
        refresh_grant(grant.grant_id)
    except Exception as error:
        assert getattr(error, "code", "") == "upstream_unavailable"
    stored = Grant.get(grant.grant_id)
    assert stored.lease_owner is None
    assert stored.status == "active"
    tokens, _ = refresh_grant(grant.grant_id)  # the old refresh token is still good
    assert tokens.access_token


def test_a_flood_of_unknown_kids_refetches_the_jwks_at_most_once(broker: BrokerUnderTest) -> None:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from chalicelib.config import get_settings
    from chalicelib.oauth.discovery import identity_provider
    from chalicelib.oauth.errors import IdTokenInvalid
    from chalicelib.oauth.id_token import validate_id_token

    provider = identity_provider(get_settings().xero_identity_url)
    provider.key_set()
    before = calls(broker.sandbox).get("identity.jwks", 0)
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-xero"})
    now = int(time.time())
    claims = {
        "iss": provider.issuer,
        "aud": broker.xero_client_id,
        "exp": now + 300,
        "iat": now,
        "nonce": "n",
    }
    forged = jwt.encode({"alg": "RS256", "kid": "not-xero"}, claims, stranger)
    for _ in range(5):
        try:
            validate_id_token(forged, provider=provider, client_id=broker.xero_client_id, nonce="n")
        except IdTokenInvalid:
            pass
        else:
            raise AssertionError("a token signed by an unknown key was accepted")
    assert calls(broker.sandbox).get("identity.jwks", 0) - before == 1
