"""Reauthorise in place, refuse a practice change unless allowed, disconnect and revoke."""

from __future__ import annotations

import requests

from chalicelib.audit import AuditRecord
from chalicelib.oauth.models import Grant
from chalicelib.tenants.models import Connection
from chalicelib.webhooks.models import Event
from tests.functional.broker import BrokerUnderTest
from tests.functional.sandbox.oauth_helpers import ALICE, BLOGGS, CAROL, HARBOUR


def _calls(broker: BrokerUnderTest) -> dict[str, int]:
    return dict(requests.get(f"{broker.sandbox.url}/_sandbox/calls", timeout=5).json())


def _events(broker: BrokerUnderTest) -> list[str]:
    return [e.type for e in Event.query(broker.vendor.vendor_id)]


def test_reauthorise_replaces_tokens_in_place_and_keeps_history(broker: BrokerUnderTest) -> None:
    broker.connect("firm-1")
    before = Connection.get(broker.vendor.vendor_id, "firm-1")
    old_grant = Grant.get(before.grant_id)

    query = broker.connect("firm-1", mode="reauthorise")
    assert query["status"] == ["connected"]
    after = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert after.xero_tenant_id == BLOGGS
    assert after.connected_at == before.connected_at  # same connection, history kept
    assert Grant.get(after.grant_id).version == old_grant.version + 1
    assert _events(broker) == ["connection.created", "connection.reauthorised"]
    audit = [a.action for a in AuditRecord.query(broker.vendor.vendor_id)]
    assert audit.count("connection.created") == 1
    assert audit.count("connection.reauthorised") == 1


def test_a_different_practice_is_refused_unless_the_session_allows_it(broker: BrokerUnderTest) -> None:
    broker.connect("firm-1")
    refused = broker.connect("firm-1", mode="reauthorise", tenant_id=HARBOUR)
    assert refused["error"] == ["practice_mismatch"]
    assert Connection.get(broker.vendor.vendor_id, "firm-1").xero_tenant_id == BLOGGS

    allowed = broker.connect("firm-1", mode="reauthorise", tenant_id=HARBOUR, allow_practice_change=True)
    assert allowed["status"] == ["connected"]
    assert Connection.get(broker.vendor.vendor_id, "firm-1").xero_tenant_id == HARBOUR


def test_reauthorise_needs_an_existing_tenant(broker: BrokerUnderTest) -> None:
    response = broker.signed(
        "POST",
        "/v1/tenants/never-connected/connect-sessions",
        json_body={"return_url": "https://vendor.example/xero/done", "mode": "reauthorise"},
    )
    assert response.status_code == 404
    assert response.json_body["code"] == "tenant_not_found"


def test_disconnect_deletes_at_xero_revokes_and_shreds(broker: BrokerUnderTest) -> None:
    broker.connect("firm-1")
    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    requests.delete(f"{broker.sandbox.url}/_sandbox/calls", timeout=5)

    response = broker.signed("DELETE", "/v1/tenants/firm-1/connection")
    assert response.status_code == 204
    calls = _calls(broker)
    assert calls.get("connections.delete") == 1
    assert calls.get("identity.revocation") == 1
    assert not [c for c in broker.sandbox.state.connections.values() if c.tenant_id == BLOGGS]

    grant = Grant.get(connection.grant_id)
    assert grant.status == "revoked"
    assert grant.token_ct is None
    stored = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert stored.status == "revoked"
    assert _events(broker)[-1] == "connection.revoked"
    status = broker.signed("GET", "/v1/tenants/firm-1/connection").json_body
    assert status["status"] == "revoked"
    assert status["next_rotation_at"] is None

    # Idempotent: a second call succeeds without calling Xero again.
    assert broker.signed("DELETE", "/v1/tenants/firm-1/connection").status_code == 204
    assert _calls(broker).get("connections.delete") == 1
    assert _events(broker).count("connection.revoked") == 1


def test_disconnect_keeps_the_grant_when_another_tenant_uses_it(broker: BrokerUnderTest) -> None:
    broker.connect("firm-1", tenant_id=BLOGGS)
    broker.connect("firm-2", tenant_id=HARBOUR)
    first = Connection.get(broker.vendor.vendor_id, "firm-1")
    second = Connection.get(broker.vendor.vendor_id, "firm-2")
    assert first.grant_id == second.grant_id  # one grant per vendor x Xero user
    requests.delete(f"{broker.sandbox.url}/_sandbox/calls", timeout=5)

    assert broker.signed("DELETE", "/v1/tenants/firm-1/connection").status_code == 204
    calls = _calls(broker)
    assert calls.get("connections.delete") == 1
    assert "identity.revocation" not in calls  # revoking would cut firm-2 off (xero-reference §1.7)
    assert Grant.get(second.grant_id).status == "active"
    assert broker.signed("GET", "/v1/tenants/firm-2/connection").json_body["status"] == "active"


def test_another_vendors_tenant_is_404_and_xero_is_not_called(broker: BrokerUnderTest) -> None:
    from tests.functional.broker import make_vendor

    broker.connect("firm-1")
    other = make_vendor(
        name="Other Co",
        xero_client_id=broker.xero_client_id,
        xero_client_secret="irrelevant",
        return_urls=["https://other.example/done"],
    )
    requests.delete(f"{broker.sandbox.url}/_sandbox/calls", timeout=5)
    for method in ("GET", "DELETE"):
        response = broker.signed(method, "/v1/tenants/firm-1/connection", vendor=other)
        assert response.status_code == 404
        assert response.json_body["code"] == "tenant_not_found"
    assert _calls(broker) == {}
    assert Connection.get(broker.vendor.vendor_id, "firm-1").status == "active"


def test_a_connection_made_by_another_user_of_the_practice_can_reconnect(broker: BrokerUnderTest) -> None:
    broker.connect("firm-2", user=CAROL, tenant_id=HARBOUR)
    first_grant = Connection.get(broker.vendor.vendor_id, "firm-2").grant_id
    broker.connect("firm-2", user=ALICE, tenant_id=HARBOUR, mode="reauthorise")
    connection = Connection.get(broker.vendor.vendor_id, "firm-2")
    assert connection.authorised_by is not None
    assert connection.authorised_by.email == ALICE
    assert connection.grant_id != first_grant
    # Carol's grant is no longer used by any connection: revoked and shredded.
    old = Grant.get(first_grant)
    assert old.status == "revoked"
    assert old.token_ct is None
