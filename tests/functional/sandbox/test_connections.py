"""``GET/DELETE /connections`` over loopback HTTP (xero-reference.md §1.8)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
import requests

from sandbox.server import SandboxServer
from tests.functional.sandbox.oauth_helpers import (
    ALICE,
    BLOGGS,
    CAROL,
    HARBOUR,
    TIMEOUT,
    AppCredentials,
    advance_clock,
    arm_fault,
    calls,
    connect,
    decode,
    list_connections,
    register_app,
)

XERO_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}")
FIELDS = {"id", "authEventId", "tenantId", "tenantType", "tenantName", "createdDateUtc", "updatedDateUtc"}


@pytest.fixture
def app(sandbox: SandboxServer) -> AppCredentials:
    return register_app(sandbox, name="Acme Broker")


def _auth_event(sandbox: SandboxServer, access_token: str) -> str:
    claims = decode(sandbox, access_token, audience=f"{sandbox.url}/resources")
    return str(claims["authentication_event_id"])


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def _delete(sandbox: SandboxServer, access_token: str, connection_id: str) -> requests.Response:
    return requests.delete(
        f"{sandbox.url}/connections/{connection_id}",
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=TIMEOUT,
    )


def test_connections_have_xeros_fields_and_timestamp_format(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    before = time.time()
    tokens = connect(sandbox, app, ALICE, BLOGGS)

    response = list_connections(sandbox, tokens["access_token"])

    assert response.status_code == 200
    [row] = response.json()
    assert set(row) == FIELDS
    assert row["tenantId"] == BLOGGS
    assert row["tenantType"] == "PRACTICEMANAGER"
    assert row["tenantName"] == "Bloggs & Co Chartered Accountants"
    assert row["authEventId"] == _auth_event(sandbox, tokens["access_token"])
    assert row["id"] not in (row["tenantId"], row["authEventId"])
    for stamp in (row["createdDateUtc"], row["updatedDateUtc"]):
        assert XERO_TIMESTAMP.fullmatch(stamp), stamp  # no Z, 7 fractional digits
        assert abs(_parse(stamp).timestamp() - before) < 60  # UTC


def test_the_uppercase_path_from_the_openapi_spec_works(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)

    response = requests.get(
        f"{sandbox.url}/Connections",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=TIMEOUT,
    )

    assert [c["tenantId"] for c in response.json()] == [BLOGGS]


def test_auth_event_filter_returns_one_consent_round(sandbox: SandboxServer, app: AppCredentials) -> None:
    first = connect(sandbox, app, ALICE, BLOGGS)
    second = connect(sandbox, app, ALICE, HARBOUR)

    unfiltered = list_connections(sandbox, second["access_token"]).json()
    by_first = list_connections(sandbox, second["access_token"], _auth_event(sandbox, first["access_token"]))
    by_second = list_connections(sandbox, first["access_token"], _auth_event(sandbox, second["access_token"]))

    assert {c["tenantId"] for c in unfiltered} == {BLOGGS, HARBOUR}
    assert [c["tenantId"] for c in by_first.json()] == [BLOGGS]
    assert [c["tenantId"] for c in by_second.json()] == [HARBOUR]


def test_reconsenting_to_a_connected_practice_keeps_the_old_auth_event(
    sandbox: SandboxServer, app: AppCredentials
) -> None:
    first = connect(sandbox, app, ALICE, BLOGGS)
    [original] = list_connections(sandbox, first["access_token"]).json()
    advance_clock(sandbox, 3600)

    second = connect(sandbox, app, ALICE, BLOGGS)
    new_event = _auth_event(sandbox, second["access_token"])

    assert new_event != original["authEventId"]
    assert list_connections(sandbox, second["access_token"], new_event).json() == []  # the gotcha (§1.8)
    [after] = list_connections(sandbox, second["access_token"]).json()
    assert after["id"] == original["id"]
    assert after["authEventId"] == original["authEventId"]
    assert after["createdDateUtc"] == original["createdDateUtc"]
    assert (
        _parse(after["updatedDateUtc"]).timestamp() - _parse(original["updatedDateUtc"]).timestamp() >= 3599
    )


def test_tenant_name_can_be_null_as_in_xeros_example(
    sandbox: SandboxServer, app: AppCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox.state.config, "practice_tenant_name_null", True)
    tokens = connect(sandbox, app, ALICE, BLOGGS)

    response = list_connections(sandbox, tokens["access_token"])

    assert response.json()[0]["tenantName"] is None
    assert '"tenantName":null' in response.text.replace(" ", "")


def test_each_app_and_user_sees_only_its_own_connections(sandbox: SandboxServer, app: AppCredentials) -> None:
    other = register_app(sandbox, name="Other app")
    alice = connect(sandbox, app, ALICE, BLOGGS)
    connect(sandbox, other, ALICE, HARBOUR)
    carol = connect(sandbox, app, CAROL, HARBOUR)

    assert [c["tenantId"] for c in list_connections(sandbox, alice["access_token"]).json()] == [BLOGGS]
    assert [c["tenantId"] for c in list_connections(sandbox, carol["access_token"]).json()] == [HARBOUR]


def test_delete_own_connection_then_404(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    [row] = list_connections(sandbox, tokens["access_token"]).json()

    deleted = _delete(sandbox, tokens["access_token"], row["id"])
    again = _delete(sandbox, tokens["access_token"], row["id"])

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert again.status_code == 404
    assert list_connections(sandbox, tokens["access_token"]).json() == []
    assert calls(sandbox)["connections.delete"] == 2


def test_someone_elses_connection_cannot_be_deleted(sandbox: SandboxServer, app: AppCredentials) -> None:
    other = register_app(sandbox, name="Other app")
    carol = connect(sandbox, app, CAROL, HARBOUR)
    alice = connect(sandbox, app, ALICE, HARBOUR)
    alice_other_app = connect(sandbox, other, ALICE, BLOGGS)
    [carols] = list_connections(sandbox, carol["access_token"]).json()
    [alices] = list_connections(sandbox, alice["access_token"]).json()

    assert _delete(sandbox, alice["access_token"], carols["id"]).status_code == 404
    assert _delete(sandbox, alice_other_app["access_token"], alices["id"]).status_code == 404
    assert _delete(sandbox, alice["access_token"], "no-such-id").status_code == 404
    assert len(list_connections(sandbox, carol["access_token"]).json()) == 1
    assert len(list_connections(sandbox, alice["access_token"]).json()) == 1


def test_tenantless_calls_carry_only_the_app_minute_header(
    sandbox: SandboxServer, app: AppCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox.state.config.limits, "app_per_minute", 100)
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    advance_clock(sandbox, 61 - sandbox.state.clock.now() % 60)  # 1 s into a fresh minute window

    first = list_connections(sandbox, tokens["access_token"])
    second = list_connections(sandbox, tokens["access_token"])

    assert first.headers["X-AppMinLimit-Remaining"] == "99"
    assert second.headers["X-AppMinLimit-Remaining"] == "98"
    for header in ("X-MinLimit-Remaining", "X-DayLimit-Remaining"):
        assert header not in first.headers
    advance_clock(sandbox, 60)
    assert list_connections(sandbox, tokens["access_token"]).headers["X-AppMinLimit-Remaining"] == "99"


def test_connections_need_a_valid_access_token(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)

    missing = requests.get(f"{sandbox.url}/connections", timeout=TIMEOUT)
    forged = list_connections(sandbox, tokens["access_token"][:-4] + "AAAA")
    advance_clock(sandbox, 1801)
    expired = list_connections(sandbox, tokens["access_token"])

    assert missing.status_code == forged.status_code == expired.status_code == 401
    assert missing.json()["title"] == "Unauthorized"
    assert expired.json()["detail"].startswith("TokenExpired")
    row_id = next(iter(sandbox.state.connections))
    assert _delete(sandbox, tokens["access_token"], row_id).status_code == 401
    assert row_id in sandbox.state.connections


def test_connections_calls_are_counted(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)

    list_connections(sandbox, tokens["access_token"])
    list_connections(sandbox, tokens["access_token"])

    assert calls(sandbox)["connections.list"] == 2


def test_connections_server_error_then_success(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    arm_fault(sandbox, "connections", "server_error", count=2, status=502)

    statuses = [list_connections(sandbox, tokens["access_token"]).status_code for _ in range(3)]

    assert statuses == [502, 502, 200]


def test_connections_rate_limit_fault(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    arm_fault(sandbox, "connections", "rate_limit", retry_after=12, problem="appminute")

    response = list_connections(sandbox, tokens["access_token"])

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "12"
    assert response.headers["X-Rate-Limit-Problem"] == "appminute"


def test_connections_timeout_fault(sandbox: SandboxServer, app: AppCredentials) -> None:
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    arm_fault(sandbox, "connections", "timeout", seconds=1)
    started = time.monotonic()

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(
            f"{sandbox.url}/connections",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            timeout=0.3,
        )

    assert list_connections(sandbox, tokens["access_token"]).status_code == 200  # the fault was one-shot
    # Let the slow call finish here rather than inside the next test's freshly reset sandbox.
    time.sleep(max(0.0, started + 1.2 - time.monotonic()))


def test_connections_and_xpm_calls_share_one_app_minute_budget(sandbox: SandboxServer) -> None:
    sandbox.state.config.limits.app_per_minute = 5
    app = register_app(sandbox)
    tokens = connect(sandbox, app, ALICE, BLOGGS)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    for _ in range(2):
        staff = requests.get(
            f"{sandbox.url}/practicemanager/3.0/staff.api/list",
            headers={**bearer, "xero-tenant-id": BLOGGS},
            timeout=TIMEOUT,
        )
        assert staff.status_code == 200
    listing = requests.get(f"{sandbox.url}/connections", headers=bearer, timeout=TIMEOUT)
    assert listing.headers["X-AppMinLimit-Remaining"] == "2"
