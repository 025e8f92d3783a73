"""The connect journey end to end over loopback HTTP: vendor API → hosted page → sandbox → callback."""

from __future__ import annotations

import requests

from chalicelib.audit import AuditRecord
from chalicelib.oauth.grants import read_tokens
from chalicelib.oauth.models import Grant
from chalicelib.tenants.models import Connection
from chalicelib.webhooks.models import Event
from tests.functional.broker import RETURN_URL, BrokerUnderTest, text_of
from tests.functional.sandbox.oauth_helpers import ALICE, BLOGGS


def test_connect_stores_the_practice_and_redirects_connected(broker: BrokerUnderTest) -> None:
    query = broker.connect("firm-1")
    assert query["status"] == ["connected"]
    assert query["tenant_ref"] == ["firm-1"]

    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert connection.status == "active"
    assert connection.xero_tenant_id == BLOGGS
    assert connection.authorised_by is not None
    assert connection.authorised_by.email == ALICE
    grant = Grant.get(connection.grant_id)
    tokens = read_tokens(grant)
    assert tokens.refresh_token not in grant.token_ct  # only ciphertext is stored
    assert tokens.access_token.split(".")[1] not in grant.token_ct
    events = [e.type for e in Event.query(broker.vendor.vendor_id)]
    assert events == ["connection.created"]
    actions = [a.action for a in AuditRecord.query(broker.vendor.vendor_id)]
    assert "connection.created" in actions

    status = broker.signed("GET", "/v1/tenants/firm-1/connection")
    assert status.status_code == 200
    body = status.json_body
    assert body["status"] == "active"
    assert body["xero_tenant_id"] == BLOGGS
    assert body["practice_name"].startswith("Bloggs")
    assert body["authorised_by"]["email"] == ALICE
    assert "practicemanager.client" in body["scopes"]
    assert body["refresh_token_expires_at"] and body["next_rotation_at"]
    assert "token" not in str({k: v for k, v in body.items() if k != "refresh_token_expires_at"})


def test_hosted_page_explains_and_sets_safe_headers(broker: BrokerUnderTest) -> None:
    session = broker.create_session("firm-1")
    assert session["connect_url"].endswith(f"/connect/{session['session_id']}")
    page = broker.client.http.get(f"/connect/{session['session_id']}")
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "no-referrer"
    words = text_of(page.body)
    assert "Acme Docs" in words
    assert "Connect third-party add-ons" in words
    assert "Connect to Xero" in words
    assert "<script" not in page.body.decode()
    assert "http" not in page.body.decode().split("<main>")[1].split("</main>")[0].replace("form", "")


def test_cancel_at_xero_redirects_access_denied(broker: BrokerUnderTest) -> None:
    query = broker.connect("firm-1", decision="cancel")
    assert query["status"] == ["error"]
    assert query["error"] == ["access_denied"]
    assert not list(Connection.query(broker.vendor.vendor_id))


def test_staff_without_permission_get_no_practice_manager_access(broker: BrokerUnderTest) -> None:
    query = broker.connect("firm-1", user="bob@sandbox.example", tenant_id=None)
    assert query["error"] == ["no_practice_manager_access"]
    page = broker.client.http.get(f"/connect/{query['session_id'][0]}")
    assert "Settings \u203a Staff \u203a your name \u203a Permissions" in text_of(page.body)


def test_state_is_single_use_and_bound_to_the_browser(broker: BrokerUnderTest) -> None:
    session = broker.create_session("firm-1")
    callback_url = broker.consent(broker.start(session["session_id"]))
    stolen = broker.callback(callback_url, cookies={})
    assert stolen.status_code == 400
    assert "Location" not in stolen.headers
    # The failed attempt consumed the state: even the right browser cannot replay it.
    replay = broker.callback(callback_url)
    assert replay.status_code == 400
    assert "Location" not in replay.headers

    fresh = broker.create_session("firm-2")
    good_url = broker.consent(broker.start(fresh["session_id"]))
    assert broker.callback(good_url).status_code == 302
    again = broker.callback(good_url)
    assert again.status_code == 400
    assert "Location" not in again.headers


def test_unknown_state_gets_a_page_not_a_redirect(broker: BrokerUnderTest) -> None:
    response = broker.client.http.get("/oauth/callback?code=abc&state=forged")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert b"could not be completed" in response.body


def test_return_url_must_match_exactly(broker: BrokerUnderTest) -> None:
    for near_miss in (
        RETURN_URL + "/",
        RETURN_URL.upper(),
        RETURN_URL + "?x=1",
        "https://vendor.example/xero/done#f",
    ):
        response = broker.signed(
            "POST", "/v1/tenants/firm-1/connect-sessions", json_body={"return_url": near_miss}
        )
        assert response.status_code == 422
        assert response.json_body["code"] == "return_url_not_registered"


def test_sandbox_counts_one_token_exchange_per_connect(broker: BrokerUnderTest) -> None:
    requests.delete(f"{broker.sandbox.url}/_sandbox/calls", timeout=5)
    broker.connect("firm-1")
    calls = requests.get(f"{broker.sandbox.url}/_sandbox/calls", timeout=5).json()
    assert calls.get("identity.token.authorization_code") == 1
