"""The gateway in front of XPM: tokens (401), tenants (403) and scopes (401 insufficient_scope), §1.11."""

from __future__ import annotations

import pytest
import requests

from sandbox.server import SandboxServer
from tests.functional.sandbox.xpm_helpers import (
    XpmApi,
    advance_clock,
    control,
    document,
    ok,
    practice_id,
    user_id,
)

READ = ("client.api/list", "GET")
WRITE = ("client.api/add", "POST")


def call(api: XpmApi, endpoint: tuple[str, str]) -> requests.Response:
    path, verb = endpoint
    return api.request(
        verb, path, data=document("Client", Name="Scope Probe Ltd") if verb == "POST" else None
    )


def assert_problem(response: requests.Response, status: int, detail_prefix: str) -> None:
    """A JSON problem body from the gateway, never the XML envelope (§3.2)."""
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status
    assert body["title"] == {401: "Unauthorized", 403: "Forbidden"}[status]
    assert body["detail"].startswith(detail_prefix)
    assert body["instance"]


def test_no_token_is_401(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    api.headers.pop("Authorization")

    assert_problem(api.get("client.api/list"), 401, "AuthenticationUnsuccessful")


def test_a_forged_token_is_401(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    header, payload, _ = api.headers["Authorization"].removeprefix("Bearer ").split(".")
    api.headers["Authorization"] = f"Bearer {header}.{payload}.c2lnbmF0dXJl"

    assert_problem(api.get("client.api/list"), 401, "AuthenticationUnsuccessful")


def test_an_expired_token_is_401_token_expired(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    ok(api.get("staff.api/list"))
    advance_clock(sandbox, 31 * 60)

    response = api.get("staff.api/list")

    assert_problem(response, 401, "TokenExpired: token expired at ")


def test_missing_tenant_header_is_403(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    api.headers.pop("xero-tenant-id")

    assert_problem(api.get("client.api/list"), 403, "AuthenticationUnsuccessful")


def test_a_tenant_the_app_is_not_connected_to_is_403(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox, "alice", "bloggs")  # connected to bloggs only
    api.headers["xero-tenant-id"] = practice_id("harbour")

    assert_problem(api.get("client.api/list"), 403, "AuthenticationUnsuccessful")
    api.headers["xero-tenant-id"] = "not-a-tenant"
    assert_problem(api.get("client.api/list"), 403, "AuthenticationUnsuccessful")


def test_another_users_connection_does_not_count(sandbox: SandboxServer) -> None:
    alice = XpmApi.connect(sandbox, "alice", "bloggs")
    carol = XpmApi.connect(sandbox, "carol", "harbour", app=alice.app)  # same app, other user
    carol.headers["xero-tenant-id"] = practice_id("bloggs")

    assert_problem(carol.get("client.api/list"), 403, "AuthenticationUnsuccessful")
    ok(alice.get("client.api/list"))


def test_the_tenant_header_name_is_case_insensitive(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    tenant = api.headers.pop("xero-tenant-id")

    ok(api.get("staff.api/list", headers={"Xero-Tenant-Id": tenant}))
    ok(api.get("staff.api/list", headers={"XERO-TENANT-ID": tenant}))


def test_a_user_who_lost_the_permission_is_403(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    ok(api.get("staff.api/list"))
    body = {"tenant_id": api.tenant_id, "can_connect": False}

    assert control(sandbox, "PUT", f"users/{user_id('alice')}/permissions", body).status_code == 200

    assert_problem(api.get("staff.api/list"), 403, "AuthenticationUnsuccessful")


def test_a_disconnected_app_is_403(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    control(sandbox, "POST", f"users/{user_id('alice')}/disconnect?client_id={api.app.client_id}")

    assert_problem(api.get("client.api/list"), 403, "AuthenticationUnsuccessful")


@pytest.mark.parametrize(
    ("scopes", "endpoint", "allowed"),
    [
        (("openid", "practicemanager.staff.read"), READ, False),
        (("openid", "practicemanager.client.read"), READ, True),
        (("openid", "practicemanager.client.read"), WRITE, False),
        (("openid", "practicemanager.client"), WRITE, True),
        (("openid", "practicemanager.client.read"), ("clientgroup.api/list", "GET"), True),
        (("openid", "practicemanager.job"), ("clientgroup.api/list", "GET"), False),
        (("openid", "practicemanager.client"), ("staff.api/list", "GET"), False),
        (("openid", "practicemanager.staff"), ("staff.api/list", "GET"), True),
        (("openid", "practicemanager.staff.read"), ("staff.api/list", "GET"), True),
        (("openid", "practicemanager"), WRITE, True),
        (("openid", "practicemanager"), ("staff.api/list", "GET"), True),
        (("openid", "practicemanager.client.read"), ("client.api/addrelationship", "POST"), False),
        (("openid", "practicemanager.client"), ("client.api/addrelationship", "POST"), True),
    ],
)
def test_scopes(
    sandbox: SandboxServer, scopes: tuple[str, ...], endpoint: tuple[str, str], allowed: bool
) -> None:
    api = XpmApi.connect(sandbox, scopes=scopes)

    response = call(api, endpoint)

    if not allowed:
        assert_problem(response, 401, "AuthorizationUnsuccessful")
        assert response.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    else:
        # Past the gateway: an XML answer (an ERROR one for the relationship probe's wrong body).
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/xml")


def test_refused_calls_do_not_spend_the_rate_budget(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    unscoped = XpmApi.connect(sandbox, scopes=("openid",), app=api.app)
    anonymous = XpmApi(api.sandbox_url, api.app, {"xero-tenant-id": api.tenant_id})

    for refused in (unscoped.get("client.api/list"), anonymous.get("client.api/list")):
        assert refused.status_code in (401, 403)
        assert "X-MinLimit-Remaining" not in refused.headers
    response = api.get("staff.api/list")

    assert response.headers["X-MinLimit-Remaining"] == "59"
    assert response.headers["X-DayLimit-Remaining"] == "4999"
