"""The signed XPM proxy over the sandbox: search, get, create, pushes, token expiry, faults."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import boto3
import pytest
import requests

from chalicelib.config import get_settings
from chalicelib.oauth.models import Grant
from chalicelib.tenants.models import Connection
from chalicelib.webhooks.models import Event
from chalicelib.xpm.pushes import handle_push_messages
from tests.functional.broker import BrokerUnderTest
from tests.functional.sandbox.oauth_helpers import ALICE, BLOGGS, arm_fault, calls


@pytest.fixture
def connected(broker: BrokerUnderTest) -> BrokerUnderTest:
    broker.connect("firm-1")
    return broker


def _clients(broker: BrokerUnderTest) -> list[dict[str, Any]]:
    response = requests.get(f"{broker.sandbox.url}/_sandbox/practices/{BLOGGS}/clients", timeout=10)
    return list(response.json())


def _named(broker: BrokerUnderTest, name: str) -> list[dict[str, Any]]:
    return [
        c
        for c in _clients(broker)
        if (c.get("name") or c.get("Name")) == name and not c.get("is_deleted", False)
    ]


def _post(broker: BrokerUnderTest, path: str, body: Any, key: str | None = "key-1") -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return broker.signed("POST", path, json_body=body, headers=headers)


def _drain_pushes(broker: BrokerUnderTest) -> int:
    """Deliver queued push messages to the worker, as SQS + Lambda (or the pump) would."""
    sqs = boto3.client("sqs", endpoint_url=get_settings().aws_endpoint_url)
    url = sqs.get_queue_url(QueueName=get_settings().queue_name("pushes"))["QueueUrl"]
    handled = 0
    for _ in range(10):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            break
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arm:aws:sqs:us-east-1:123456789012:{get_settings().queue_name('pushes')}",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
        result = handle_push_messages({"Records": records}, None)
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                handled += 1
    return handled


def test_search_maps_masks_and_passes_the_budget_on(connected: BrokerUnderTest) -> None:
    response = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs")
    assert response.status_code == 200, response.body
    clients = response.json_body["clients"]
    assert clients
    assert all("bloggs" in c["name"].lower() for c in clients)
    assert all(isinstance(c.get("contacts", []), list) for c in clients)
    assert "X-MinLimit-Remaining" in response.headers

    short = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bl")
    assert short.status_code == 422
    assert short.json_body["code"] == "search_too_short"


def test_get_shows_relationships_and_masks_tax_numbers(connected: BrokerUnderTest) -> None:
    found = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=Bloggs%20Electrical").json_body[
        "clients"
    ]
    company = found[0]
    detail = connected.signed("GET", f"/v1/tenants/firm-1/xpm/clients/{company['uuid']}")
    assert detail.status_code == 200
    body = detail.json_body
    assert isinstance(body["relationships"], list)
    assert body["relationships"]
    if body.get("tax_number"):
        assert body["tax_number"].startswith("***")
        assert len(body["tax_number"]) == 6


def test_create_client_with_relationships_is_idempotent(connected: BrokerUnderTest) -> None:
    joe = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=Joe%20Bloggs").json_body["clients"][
        0
    ]
    body = {
        "name": "Acme Holdings Pty Ltd",
        "business_structure": "Company",
        "email": "office@acme.example",
        "relationships": [
            {"type": "Director", "related_client_uuid": joe["uuid"]},
            {
                "type": "Shareholder",
                "related_client": {"first_name": "Ann", "last_name": "Acme"},
                "number_of_shares": 100,
            },
        ],
    }
    first = _post(connected, "/v1/tenants/firm-1/xpm/clients", body)
    assert first.status_code == 201, first.body
    created = first.json_body
    assert created["name"] == "Acme Holdings Pty Ltd"
    assert {r["type"] for r in created["relationships"]} == {"Director", "Shareholder"}

    before = calls(connected.sandbox).get("xpm.client.add", 0)
    replay = _post(connected, "/v1/tenants/firm-1/xpm/clients", body)
    assert replay.status_code == 201
    assert replay.json_body == created
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert calls(connected.sandbox).get("xpm.client.add", 0) == before
    assert len(_named(connected, "Acme Holdings Pty Ltd")) == 1

    changed = _post(connected, "/v1/tenants/firm-1/xpm/clients", {**body, "email": "other@acme.example"})
    assert changed.status_code == 422
    assert changed.json_body["code"] == "idempotency_key_reused"
    missing = _post(connected, "/v1/tenants/firm-1/xpm/clients", body, key=None)
    assert missing.status_code == 400
    assert missing.json_body["code"] == "idempotency_key_required"


def test_an_ambiguous_create_is_reconciled_not_duplicated(connected: BrokerUnderTest) -> None:
    arm_fault(connected.sandbox, "xpm.client.add", "drop_response")
    response = _post(
        connected,
        "/v1/tenants/firm-1/xpm/clients",
        {"name": "Lost Reply Pty Ltd", "business_structure": "Company"},
    )
    assert response.status_code == 201, response.body
    assert len(_named(connected, "Lost Reply Pty Ltd")) == 1
    assert calls(connected.sandbox).get("xpm.client.add", 0) == 1


def test_xpm_validation_errors_are_422_with_xpms_message(connected: BrokerUnderTest) -> None:
    response = _post(
        connected, "/v1/tenants/firm-1/xpm/clients", {"name": "Odd Co", "business_structure": "Spaceship"}
    )
    assert response.status_code == 422
    assert response.json_body["code"] == "xpm_validation_failed"
    assert response.json_body["detail"]


def test_push_creates_the_graph_reusing_and_matching_people(connected: BrokerUnderTest) -> None:
    joe = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=Joe%20Bloggs").json_body["clients"][
        0
    ]
    jane = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=Jane%20Bloggs").json_body[
        "clients"
    ][0]
    jane_detail = connected.signed("GET", f"/v1/tenants/firm-1/xpm/clients/{jane['uuid']}").json_body
    body = {
        "entity": {"name": "Bloggs Ventures Pty Ltd", "business_structure": "Company"},
        "parties": [
            {"ref": "joe", "xpm_uuid": joe["uuid"]},
            {
                "ref": "jane",
                "first_name": "Jane",
                "last_name": "Bloggs",
                "date_of_birth": (jane_detail.get("date_of_birth") or "")[:10] or None,
                "email": jane_detail.get("email"),
            },
            {
                "ref": "sam",
                "first_name": "Sam",
                "last_name": "Newperson",
                "date_of_birth": "1990-02-03",
                "tax_number": "123456782",
            },
        ],
        "relationships": [
            {"type": "Director", "related": "joe"},
            {"type": "Director", "related": "sam"},
            {"type": "Shareholder", "related": "jane", "number_of_shares": 50},
            {"type": "Public Officer", "related": "sam"},
        ],
    }
    accepted = _post(connected, "/v1/tenants/firm-1/xpm/pushes", body, key=str(uuid.uuid4()))
    assert accepted.status_code == 202, accepted.body
    push_id = accepted.json_body["push_id"]
    assert connected.signed("GET", f"/v1/tenants/firm-1/xpm/pushes/{push_id}").json_body["status"] == "queued"

    assert _drain_pushes(connected) == 1
    job = connected.signed("GET", f"/v1/tenants/firm-1/xpm/pushes/{push_id}").json_body
    assert job["status"] == "completed", job
    actions = {r["ref"]: r["action"] for r in job["records"]}
    assert actions == {"entity": "created", "joe": "reused", "jane": "matched", "sam": "created"}
    assert all(r["status"] == "done" for r in job["relationships"])
    assert len(_named(connected, "Jane Bloggs")) == 1  # matched, not duplicated
    event = [e for e in Event.query(connected.vendor.vendor_id) if e.type.startswith("push.")][-1]
    assert event.type == "push.completed"
    assert "123456782" not in event.data_json
    company = connected.signed(
        "GET", f"/v1/tenants/firm-1/xpm/clients/{job['records'][0]['xpm_uuid']}"
    ).json_body
    assert len(company["relationships"]) == 4


def test_a_push_with_a_rejected_record_ends_failed(connected: BrokerUnderTest) -> None:
    body = {
        "entity": {"name": "Nowhere Trust", "business_structure": "Unknown Structure"},
        "parties": [{"ref": "p", "first_name": "Pat", "last_name": "Person"}],
        "relationships": [{"type": "Trustee", "related": "p"}],
    }
    push_id = _post(connected, "/v1/tenants/firm-1/xpm/pushes", body, key="fail-1").json_body["push_id"]
    _drain_pushes(connected)
    job = connected.signed("GET", f"/v1/tenants/firm-1/xpm/pushes/{push_id}").json_body
    assert job["status"] == "failed"
    entity = job["records"][0]
    assert entity["status"] == "failed"
    assert entity["error"]["code"] == "xpm_validation_failed"
    assert job["relationships"][0]["error"]["code"] == "dependency_failed"
    assert [e.type for e in Event.query(connected.vendor.vendor_id)][-1] == "push.failed"


def test_push_validation_happens_before_queueing(connected: BrokerUnderTest) -> None:
    bad = {"entity": {"name": "X"}, "parties": [], "relationships": []}
    response = _post(connected, "/v1/tenants/firm-1/xpm/pushes", bad)
    assert response.status_code == 422
    assert response.json_body["code"] == "invalid_request"
    wrong_type = {
        "entity": {"name": "X", "business_structure": "Company"},
        "parties": [{"ref": "a", "name": "A"}],
        "relationships": [{"type": "Overlord", "related": "a"}],
    }
    assert _post(connected, "/v1/tenants/firm-1/xpm/pushes", wrong_type, key="k2").status_code == 422


def test_fifty_concurrent_searches_on_an_expired_token_refresh_once(
    connected: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over real HTTP (chalice local's threaded server): exactly one refresh, all 50 succeed."""
    from tests.functional.broker import LiveBroker, live_broker_fixture

    connection = Connection.get(connected.vendor.vendor_id, "firm-1")
    Grant.get(connection.grant_id).update(actions=[Grant.access_expires_at.set(time.time() - 5)])
    before = calls(connected.sandbox).get("identity.token.refresh", 0)
    statuses: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def search(live: LiveBroker) -> None:
        start.wait()
        response = live.get("/v1/tenants/firm-1/xpm/clients?search=bloggs")
        with lock:
            statuses.append(response.status_code)
            if response.status_code != 200:
                failures.append(response.text[:300])

    for live in live_broker_fixture(connected, monkeypatch):
        threads = [threading.Thread(target=search, args=(live,)) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 50, failures
    assert calls(connected.sandbox).get("identity.token.refresh", 0) == before + 1


def test_token_expired_at_xero_triggers_one_refresh_and_retry(
    connected: BrokerUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    requests.post(f"{connected.sandbox.url}/_sandbox/clock/advance", json={"seconds": 1900}, timeout=5)
    before = calls(connected.sandbox).get("identity.token.refresh", 0)
    capsys.readouterr()
    response = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs")
    assert response.status_code == 200, response.body
    assert calls(connected.sandbox).get("identity.token.refresh", 0) == before + 1
    points = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"Refreshes"' in line]
    assert [(p["service"], p["outcome"], p["Refreshes"]) for p in points] == [("refresh", "refreshed", [1.0])]


def test_lost_permission_marks_the_connection_and_answers_409(connected: BrokerUnderTest) -> None:
    alice = connected.sandbox.state.user_by_email(ALICE)
    assert alice is not None
    requests.put(
        f"{connected.sandbox.url}/_sandbox/users/{alice.user_id}/permissions",
        json={"tenant_id": BLOGGS, "can_connect": False},
        timeout=5,
    )
    response = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs")
    assert response.status_code == 409
    assert response.json_body["code"] == "connection_not_active"
    assert Connection.get(connected.vendor.vendor_id, "firm-1").status == "needs_reauthorisation"
    types = [e.type for e in Event.query(connected.vendor.vendor_id)]
    assert types.count("connection.needs_reauthorisation") == 1
    again = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs")
    assert again.status_code == 409
    assert [e.type for e in Event.query(connected.vendor.vendor_id)].count(
        "connection.needs_reauthorisation"
    ) == 1


def test_xeros_429_is_passed_through_with_retry_after(
    connected: BrokerUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    arm_fault(connected.sandbox, "xpm", "rate_limit", retry_after=42, problem="minute")
    capsys.readouterr()
    response = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs")
    assert response.status_code == 429
    assert response.json_body["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    points = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"Upstream429"' in line]
    assert [(p["service"], p["problem"], p["Upstream429"]) for p in points] == [("xpm", "minute", [1.0])]


def test_xero_failures_are_502(connected: BrokerUnderTest) -> None:
    arm_fault(connected.sandbox, "xpm", "server_error", status=503)
    response = connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs")
    assert response.status_code == 502
    assert response.json_body["code"] == "upstream_unavailable"


def test_another_vendors_tenant_is_404_with_no_xero_call(connected: BrokerUnderTest) -> None:
    from tests.functional.broker import make_vendor

    other = make_vendor(
        name="Other", xero_client_id="x", xero_client_secret="y", return_urls=["https://other.example/done"]
    )
    before = dict(calls(connected.sandbox))
    for method, path in (
        ("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs"),
        ("GET", f"/v1/tenants/firm-1/xpm/clients/{uuid.uuid4()}"),
        ("GET", "/v1/tenants/firm-1/xpm/pushes/push_abc"),
    ):
        response = connected.signed(method, path, vendor=other)
        assert response.status_code == 404, path
    response = connected.signed(
        "POST",
        "/v1/tenants/firm-1/xpm/clients",
        json_body={"name": "Sneaky"},
        vendor=other,
        headers={"Idempotency-Key": "x1"},
    )
    assert response.status_code == 404
    assert dict(calls(connected.sandbox)) == before


def test_no_tax_number_reaches_the_logs(connected: BrokerUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    canary = "987654321"
    body = {"name": "Canary Person", "first_name": "Canary", "last_name": "Person", "tax_number": canary}
    response = _post(connected, "/v1/tenants/firm-1/xpm/clients", body, key="canary")
    assert response.status_code == 201, response.body
    assert response.json_body.get("tax_number") in (None, "***321")
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert canary not in logged
    assert canary not in json.dumps(response.json_body)


def _simple_push(connected: BrokerUnderTest, key: str) -> str:
    body = {
        "entity": {"name": f"Fault Test {key} Pty Ltd", "business_structure": "Company"},
        "parties": [{"ref": "d", "first_name": "Dee", "last_name": f"Director{key}"}],
        "relationships": [{"type": "Director", "related": "d"}],
    }
    response = _post(connected, "/v1/tenants/firm-1/xpm/pushes", body, key=key)
    assert response.status_code == 202, response.body
    return str(response.json_body["push_id"])


def _job(connected: BrokerUnderTest, push_id: str) -> dict[str, Any]:
    return dict(connected.signed("GET", f"/v1/tenants/firm-1/xpm/pushes/{push_id}").json_body)


def test_the_broker_refuses_before_xero_would(
    connected: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XPMB_GOVERNOR_PER_MINUTE", "3")
    monkeypatch.setenv("XPMB_GOVERNOR_SLOT_WAIT_SECONDS", "0")
    before = calls(connected.sandbox).get("xpm.client.search", 0)
    statuses = [connected.signed("GET", "/v1/tenants/firm-1/xpm/clients?search=bloggs") for _ in range(4)]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    refused = statuses[3]
    assert refused.status_code == 429
    assert refused.json_body["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert calls(connected.sandbox).get("xpm.client.search", 0) == before + 3


def test_a_push_survives_a_timeout_and_a_429_burst(connected: BrokerUnderTest) -> None:
    push_id = _simple_push(connected, "t1")
    arm_fault(connected.sandbox, "xpm.client.add", "drop_response")  # applied, answer lost
    arm_fault(connected.sandbox, "xpm.client.addrelationship", "rate_limit", retry_after=1, problem="minute")
    for _ in range(4):
        _drain_pushes(connected)
        if _job(connected, push_id)["status"] == "completed":
            break
        time.sleep(1.1)  # the message comes back when the rate window reopens
    job = _job(connected, push_id)
    assert job["status"] == "completed", job
    assert len(_named(connected, "Fault Test t1 Pty Ltd")) == 1
    assert all(r["status"] == "done" for r in job["relationships"])


def test_token_expiry_mid_push_refreshes_and_carries_on(connected: BrokerUnderTest) -> None:
    push_id = _simple_push(connected, "t2")
    requests.post(f"{connected.sandbox.url}/_sandbox/clock/advance", json={"seconds": 1900}, timeout=5)
    before = calls(connected.sandbox).get("identity.token.refresh", 0)
    _drain_pushes(connected)
    assert _job(connected, push_id)["status"] == "completed"
    assert calls(connected.sandbox).get("identity.token.refresh", 0) == before + 1


def test_invalid_grant_during_a_push_fails_it_and_flags_the_connection(
    connected: BrokerUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    push_id = _simple_push(connected, "t3")
    connection = Connection.get(connected.vendor.vendor_id, "firm-1")
    Grant.get(connection.grant_id).update(actions=[Grant.access_expires_at.set(time.time() - 5)])
    arm_fault(connected.sandbox, "token.refresh", "invalid_grant")
    capsys.readouterr()
    _drain_pushes(connected)
    points = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"Refreshes"' in line]
    assert [p["outcome"] for p in points] == ["invalid_grant.revoked"]
    job = _job(connected, push_id)
    assert job["status"] == "failed"
    assert job["error"] == "connection_not_active"
    types = [e.type for e in Event.query(connected.vendor.vendor_id)]
    assert "connection.needs_reauthorisation" in types
    assert types[-1] == "push.failed"
    assert _drain_pushes(connected) == 0  # nothing left to redeliver


def test_a_redelivered_finished_push_changes_nothing(connected: BrokerUnderTest) -> None:
    from chalicelib.xpm.pushes import run_push

    push_id = _simple_push(connected, "t4")
    _drain_pushes(connected)
    adds = calls(connected.sandbox).get("xpm.client.add", 0)
    events = len(list(Event.query(connected.vendor.vendor_id)))
    run_push(push_id)  # SQS delivers at least once
    assert calls(connected.sandbox).get("xpm.client.add", 0) == adds
    assert len(list(Event.query(connected.vendor.vendor_id))) == events


def test_an_unknown_client_uuid_is_404(connected: BrokerUnderTest) -> None:
    response = connected.signed("GET", f"/v1/tenants/firm-1/xpm/clients/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json_body["code"] == "xpm_client_not_found"
    assert (
        connected.signed("GET", "/v1/tenants/firm-1/xpm/pushes/push_nothing").json_body["code"]
        == "push_not_found"
    )
