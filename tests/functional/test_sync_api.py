"""The change feed from outside: POST/GET …/xpm/sync, the synced listing, the planner, the CLI."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from unittest import mock

import pytest

from app import app
from chalicelib.sync.handlers import handle_sync_messages, run_planner
from chalicelib.sync.models import SyncState
from chalicelib.sync.planner import plan_syncs
from tests.functional.broker import BrokerUnderTest, make_vendor
from tests.functional.sync_helpers import (
    Practice,
    body_of,
    client_events,
    lambda_event,
    receive_all,
    run_sync,
    sync_state,
)
from xpmb.cli import main
from xpmb.pump import FakeLambdaContext

TENANT = "firm-1"


@pytest.fixture
def practice(broker: BrokerUnderTest) -> Practice:
    broker.connect(TENANT)
    return Practice(broker.sandbox)


def _listing(broker: BrokerUnderTest, query: str = "", **kwargs: object) -> object:
    return broker.signed("GET", f"/v1/tenants/{TENANT}/xpm/clients{query}", **kwargs)  # type: ignore[arg-type]


def _problem(response: object) -> dict[str, object]:
    assert response.headers["Content-Type"] == "application/problem+json"  # type: ignore[attr-defined]
    return body_of(response)


def _all_pages(broker: BrokerUnderTest, first_query: str) -> list[dict[str, object]]:
    clients: list[dict[str, object]] = []
    query = first_query
    for _ in range(100):
        response = _listing(broker, query)
        assert response.status_code == 200, response.body  # type: ignore[attr-defined]
        page = body_of(response)
        clients.extend(page["clients"])
        if page["next_cursor"] is None:
            return clients
        query = f"?cursor={page['next_cursor']}&limit=60"
    raise AssertionError("too many pages")


def test_not_yet_synced_lists_nothing_and_says_so(broker: BrokerUnderTest, practice: Practice) -> None:
    response = _listing(broker)
    assert response.status_code == 200  # type: ignore[attr-defined]
    body = body_of(response)
    assert body["clients"] == [] and body["next_cursor"] is None
    assert body["synced"] is False
    assert body["sync"]["status"] == "not_started"
    assert body["sync"]["next_sync_at"] is not None  # the connect put it on the schedule


def test_post_sync_queues_once_and_the_worker_runs_it(broker: BrokerUnderTest, practice: Practice) -> None:
    first = broker.signed("POST", f"/v1/tenants/{TENANT}/xpm/sync")
    assert first.status_code == 202
    assert first.headers["Location"] == f"/v1/tenants/{TENANT}/xpm/sync"
    started = body_of(first)
    assert (started["status"], started["started"], started["trigger"]) == ("queued", True, "api")
    again = body_of(broker.signed("POST", f"/v1/tenants/{TENANT}/xpm/sync"))
    assert (again["sync_id"], again["started"]) == (started["sync_id"], False)  # joined, not doubled
    assert body_of(broker.signed("GET", f"/v1/tenants/{TENANT}/xpm/sync"))["status"] == "queued"
    assert _listing(broker).status_code == 200  # type: ignore[attr-defined]

    messages = receive_all()
    assert [json.loads(m["Body"])["sync_id"] for m in messages] == [started["sync_id"]]
    result = handle_sync_messages(lambda_event(messages), FakeLambdaContext("sync_worker", 120))
    assert result == {"batchItemFailures": []}

    status = body_of(broker.signed("GET", f"/v1/tenants/{TENANT}/xpm/sync"))
    assert (status["sync_id"], status["status"], status["synced"]) == (started["sync_id"], "completed", True)
    assert status["counts"]["created"] == len([c for c in practice.clients() if not c["IsDeleted"]])
    listing = body_of(_listing(broker))
    assert listing["synced"] is True and len(listing["clients"]) == 100


def test_the_listing_pages_through_every_synced_client(broker: BrokerUnderTest, practice: Practice) -> None:
    run_sync(broker.vendor.vendor_id, TENANT)
    clients = _all_pages(broker, "?limit=60")
    expected = {c["UUID"] for c in practice.clients() if not c["IsDeleted"]}
    assert len(clients) == len(expected)
    assert {c["uuid"] for c in clients} == expected
    sample = clients[0]
    assert {"uuid", "name", "email", "address", "is_archived", "updated_at"} <= set(sample)
    assert "tax_number" not in sample  # the synced list carries no Practice Management fields


def test_updated_since_lists_only_what_a_later_sync_changed(
    broker: BrokerUnderTest, practice: Practice
) -> None:
    run_sync(broker.vendor.vendor_id, TENANT)
    between = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    active = practice.active()
    changed = {active[i]["UUID"] for i in (1, 40, 90)}
    for uuid in changed:
        practice.patch(uuid, Fax="(02) 1111 2222")
    run_sync(broker.vendor.vendor_id, TENANT)

    first = body_of(_listing(broker, f"?updated_since={between}&limit=2"))
    assert len(first["clients"]) == 2 and first["next_cursor"]
    rest = body_of(_listing(broker, f"?cursor={first['next_cursor']}"))  # the cursor keeps the filter
    assert {c["uuid"] for c in first["clients"] + rest["clients"]} == changed
    assert rest["next_cursor"] is None
    assert all(c["fax"] == "(02) 1111 2222" for c in first["clients"] + rest["clients"])
    other_filter = _listing(broker, f"?cursor={first['next_cursor']}&updated_since=2020-01-01T00:00:00Z")
    assert other_filter.status_code == 422  # type: ignore[attr-defined]
    assert _problem(other_filter)["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("?limit=0", "invalid_request", "limit"),
        ("?limit=501", "invalid_request", "limit"),
        ("?limit=ten", "invalid_request", "limit"),
        ("?updated_since=yesterday", "invalid_request", "updated_since"),
        ("?updated_since=2026-11-22T10:00:00", "invalid_request", "updated_since"),  # no zone
        ("?cursor=not-a-cursor", "invalid_cursor", None),
        ("?cursor=eyJrIjp7fSwicyI6bnVsbH0", "invalid_cursor", None),  # {"k":{},"s":null}
    ],
)
def test_bad_listing_parameters_are_problems(
    broker: BrokerUnderTest, practice: Practice, query: str, code: str, field: str | None
) -> None:
    response = _listing(broker, query)
    assert response.status_code == 422  # type: ignore[attr-defined]
    problem = _problem(response)
    assert problem["code"] == code
    assert problem.get("field") == field


def test_another_vendor_sees_no_such_tenant(broker: BrokerUnderTest, practice: Practice) -> None:
    run_sync(broker.vendor.vendor_id, TENANT)
    page = body_of(_listing(broker, "?limit=5"))
    other = make_vendor(
        name="Other", xero_client_id="other-app", xero_client_secret="s", return_urls=["https://o.example/"]
    )
    for method, path in (
        ("GET", f"/v1/tenants/{TENANT}/xpm/clients"),
        ("GET", f"/v1/tenants/{TENANT}/xpm/clients?cursor={page['next_cursor']}"),
        ("POST", f"/v1/tenants/{TENANT}/xpm/sync"),
        ("GET", f"/v1/tenants/{TENANT}/xpm/sync"),
    ):
        response = broker.signed(method, path, vendor=other)
        assert response.status_code == 404, (method, path)
        assert _problem(response)["code"] == "tenant_not_found"


def test_a_cursor_does_not_cross_tenants(broker: BrokerUnderTest, practice: Practice) -> None:
    from tests.functional.sandbox.oauth_helpers import HARBOUR

    broker.connect("firm-2", tenant_id=HARBOUR)
    run_sync(broker.vendor.vendor_id, TENANT)
    run_sync(broker.vendor.vendor_id, "firm-2")
    cursor = body_of(_listing(broker, "?limit=5"))["next_cursor"]
    response = broker.signed("GET", f"/v1/tenants/firm-2/xpm/clients?cursor={cursor}")
    assert response.status_code == 422
    assert _problem(response)["code"] == "invalid_cursor"


def test_a_disconnected_tenant_cannot_be_synced_or_listed(
    broker: BrokerUnderTest, practice: Practice
) -> None:
    assert broker.signed("DELETE", f"/v1/tenants/{TENANT}/connection").status_code == 204
    for method in ("POST", "GET"):
        path = f"/v1/tenants/{TENANT}/xpm/sync" if method == "POST" else f"/v1/tenants/{TENANT}/xpm/clients"
        response = broker.signed(method, path)
        assert response.status_code == 409
        assert _problem(response)["code"] == "connection_not_active"


def test_the_planner_starts_due_syncs_without_a_scan(broker: BrokerUnderTest, practice: Practice) -> None:
    with mock.patch.object(SyncState, "scan", side_effect=AssertionError("the planner must never scan")):
        report = plan_syncs()
        assert (report.due, report.started, report.enqueued, report.queries) == (1, 1, 1, 4)
        assert plan_syncs().due == 0  # moved on by the interval
    state = sync_state(broker.vendor.vendor_id, TENANT)
    assert state.status == "queued" and state.trigger == "schedule"
    assert state.next_sync_at == pytest.approx(time.time() + 12 * 3600, abs=700)
    messages = receive_all()
    assert len(messages) == 1
    handle_sync_messages(lambda_event(messages), FakeLambdaContext("sync_worker", 120))
    assert sync_state(broker.vendor.vendor_id, TENANT).status == "completed"


def test_the_planner_joins_a_sync_in_flight(broker: BrokerUnderTest, practice: Practice) -> None:
    started = body_of(broker.signed("POST", f"/v1/tenants/{TENANT}/xpm/sync"))
    result = run_planner({}, FakeLambdaContext("sync_planner"))
    assert (result["due"], result["started"], result["joined"]) == (1, 0, 1)
    assert sync_state(broker.vendor.vendor_id, TENANT).sync_id == started["sync_id"]


def test_the_sync_interval_comes_from_settings(
    broker: BrokerUnderTest, practice: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.config import reset_settings

    monkeypatch.setenv("XPMB_SYNC_INTERVAL_HOURS", "6")
    reset_settings()
    run_sync(broker.vendor.vendor_id, TENANT)
    state = sync_state(broker.vendor.vendor_id, TENANT)
    assert state.next_sync_at == pytest.approx(time.time() + 6 * 3600, abs=60)


def test_both_handlers_are_wired_in_the_app() -> None:
    names = {source.name for source in app.event_sources}
    assert {"sync_planner", "sync_worker"} <= names


def test_cli_sync_runs_and_summarises(
    broker: BrokerUnderTest, practice: Practice, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"{broker.vendor.vendor_id}/{TENANT}"
    assert main(["sync", name]) == 0
    out, err = capsys.readouterr()
    assert "completed" in out and name in out
    assert "fetched" in err  # the progress line
    practice.patch(practice.active()[0]["UUID"], Email="cli@example.com")
    assert main(["sync", name, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    [result] = summary["tenants"]
    assert (result["status"], result["counts"]["updated"]) == ("completed", 1)
    assert len(client_events(broker.vendor.vendor_id)) == 1


def test_cli_sync_reports_bad_tenants(
    broker: BrokerUnderTest, practice: Practice, capsys: pytest.CaptureFixture[str]
) -> None:
    vendor = broker.vendor.vendor_id
    assert main(["sync", "no-slash", f"{vendor}/unknown", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert [(t["tenant"], t["status"]) for t in summary["tenants"]] == [
        ("no-slash", "error"),
        (f"{vendor}/unknown", "error"),
    ]
    assert summary["tenants"][1]["error"].startswith("tenant_not_found")


def test_cli_sync_can_only_queue(
    broker: BrokerUnderTest, practice: Practice, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sync", f"{broker.vendor.vendor_id}/{TENANT}", "--enqueue", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["tenants"]
    assert result["status"] == "queued"
    assert [json.loads(m["Body"])["sync_id"] for m in receive_all()] == [result["sync_id"]]
