"""The signed vendor API's validation, policy, listing and error contract."""

from __future__ import annotations

import json

import pytest

from chalicelib.tenants.models import Connection
from tests.functional.broker import RETURN_URL, BrokerUnderTest, broker_fixture, make_vendor


def test_unsigned_and_badly_signed_requests_get_one_uniform_401(broker: BrokerUnderTest) -> None:
    unsigned = broker.client.http.get("/v1/tenants")
    forged = broker.signed(
        "GET",
        "/v1/tenants",
        vendor=type(broker.vendor)(broker.vendor.vendor_id, broker.vendor.key_id, "wrong-secret", ""),
    )
    assert unsigned.status_code == forged.status_code == 401
    assert unsigned.headers["Content-Type"] == "application/problem+json"
    first, second = json.loads(unsigned.body), json.loads(forged.body)
    for body in (first, second):
        body.pop("request_id")
    assert first == second
    assert first["code"] == "invalid_signature"
    assert unsigned.headers["X-Request-Id"]


def test_connect_session_validation(broker: BrokerUnderTest) -> None:
    cases = [
        ({"return_url": RETURN_URL, "mode": "sideways"}, 422, "invalid_request"),
        ({"return_url": RETURN_URL, "allow_practice_change": "yes"}, 422, "invalid_request"),
        ({"return_url": RETURN_URL, "user": {"mfa_verified": "true"}}, 422, "invalid_request"),
        ({"return_url": RETURN_URL, "user": "alice"}, 422, "invalid_request"),
        ({}, 422, "return_url_not_registered"),
        ([], 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = broker.signed("POST", "/v1/tenants/firm-1/connect-sessions", json_body=body)
        assert (response.status_code, response.json_body["code"]) == (status, code), body
    invalid_json = broker.signed("POST", "/v1/tenants/firm-1/connect-sessions", raw=b"{not json")
    assert invalid_json.status_code == 400
    assert invalid_json.json_body["code"] == "invalid_json"
    bad_ref = broker.signed(
        "POST", "/v1/tenants/bad%20ref/connect-sessions", json_body={"return_url": RETURN_URL}
    )
    assert bad_ref.status_code == 404
    created = broker.create_session("Firm.Ref:2024-01_x")
    assert created["expires_at"].endswith("Z")


@pytest.fixture
def mfa_broker(local_aws: str, sandbox: object, monkeypatch: pytest.MonkeyPatch) -> object:
    yield from broker_fixture(local_aws, sandbox, monkeypatch, require_mfa_attestation=True)  # type: ignore[arg-type]


def test_mfa_attestation_policy(mfa_broker: BrokerUnderTest) -> None:
    for user in (None, {"id": "u1"}, {"id": "u1", "mfa_verified": False}):
        body = {"return_url": RETURN_URL, **({"user": user} if user is not None else {})}
        response = mfa_broker.signed("POST", "/v1/tenants/firm-1/connect-sessions", json_body=body)
        assert response.status_code == 422
        assert response.json_body["code"] == "mfa_attestation_required"
    ok = mfa_broker.create_session(
        "firm-1", user={"id": "u1", "email": "a@firm.example", "mfa_verified": True}
    )
    assert ok["session_id"]


def test_tenant_listing_pages_and_filters(broker: BrokerUnderTest) -> None:
    for n in range(7):
        status = "active" if n % 2 == 0 else "needs_reauthorisation"
        Connection(broker.vendor.vendor_id, f"firm-{n}", status=status, updated_at=1.0).save()
    seen: list[str] = []
    cursor = None
    while True:
        path = "/v1/tenants?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = broker.signed("GET", path).json_body
        seen += [t["tenant_ref"] for t in page["tenants"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == [f"firm-{n}" for n in range(7)]
    active = broker.signed("GET", "/v1/tenants?status=active&limit=100").json_body["tenants"]
    assert {t["tenant_ref"] for t in active} == {"firm-0", "firm-2", "firm-4", "firm-6"}
    assert broker.signed("GET", "/v1/tenants?status=bogus").json_body["code"] == "invalid_request"
    assert broker.signed("GET", "/v1/tenants?limit=0").json_body["code"] == "invalid_request"
    assert broker.signed("GET", "/v1/tenants?cursor=Zm9v").json_body["code"] == "invalid_cursor"
    # A cursor is bound to the vendor that got it: another vendor cannot page from it.
    other = make_vendor(name="Other", xero_client_id="x", xero_client_secret="y", return_urls=[RETURN_URL])
    Connection(other.vendor_id, "theirs-1", status="active", updated_at=1.0).save()
    Connection(other.vendor_id, "theirs-2", status="active", updated_at=1.0).save()
    theirs = broker.signed("GET", "/v1/tenants?limit=1", vendor=other).json_body["next_cursor"]
    assert theirs
    assert broker.signed("GET", f"/v1/tenants?cursor={theirs}").json_body["code"] == "invalid_cursor"


def test_status_of_an_unknown_tenant_is_404(broker: BrokerUnderTest) -> None:
    response = broker.signed("GET", "/v1/tenants/nobody/connection")
    assert response.status_code == 404
    assert response.json_body["code"] == "tenant_not_found"
    assert broker.signed("DELETE", "/v1/tenants/nobody/connection").status_code == 404


def test_a_rotated_key_works_and_a_revoked_key_is_refused(broker: BrokerUnderTest) -> None:
    from chalicelib.tenants.keys import key_resolver
    from chalicelib.tenants.vendors import revoke_key, rotate_key
    from tests.functional.broker import VendorCredentials

    new = rotate_key(broker.vendor.vendor_id)
    second = VendorCredentials(broker.vendor.vendor_id, new.key_id, new.key_secret, "")
    assert broker.signed("GET", "/v1/tenants").status_code == 200
    assert broker.signed("GET", "/v1/tenants", vendor=second).status_code == 200
    revoke_key(broker.vendor.vendor_id, broker.vendor.key_id)
    key_resolver().forget()  # in production the 30 s cache expires by itself
    assert broker.signed("GET", "/v1/tenants").status_code == 401
    assert broker.signed("GET", "/v1/tenants", vendor=second).status_code == 200
