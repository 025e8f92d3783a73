"""The Python client (clients/python) against the running local stack, method by method."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from xpmb_client import BrokerError, XpmBroker

from tests.e2e.stack import RunningStack, connect_over_http, demo_credentials

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker(stack: RunningStack) -> XpmBroker:
    credentials = demo_credentials(stack)
    return XpmBroker(stack.broker_url, credentials["key_id"], credentials["key_secret"])


@pytest.fixture(scope="module")
def tenant(stack: RunningStack, broker: XpmBroker) -> str:
    tenant_ref = f"client-test-{uuid.uuid4().hex[:8]}"
    session = broker.create_connect_session(tenant_ref, return_url=f"{stack.broker_url}/demo")
    assert session["connect_url"].startswith(f"{stack.broker_url}/connect/")
    landed = connect_over_http(stack.broker_url, session["connect_url"])
    outcome = parse_qs(urlsplit(landed).query)
    assert outcome["status"] == ["connected"], landed
    assert outcome["tenant_ref"] == [tenant_ref]
    return tenant_ref


def test_unsigned_calls(broker: XpmBroker) -> None:
    assert broker.health()["status"] == "ok"
    assert broker.openapi()["openapi"].startswith("3.1")


def test_connection_and_tenant_pages(broker: XpmBroker, tenant: str) -> None:
    connection = broker.get_connection(tenant)
    assert connection["status"] == "active"
    assert connection["practice_name"]
    # Page size 1 forces the iterator to follow next_cursor.
    refs = [t["tenant_ref"] for t in broker.iter_tenants(status="active", page_size=1)]
    assert tenant in refs
    assert len(refs) == len(set(refs))


def test_search_get_create(broker: XpmBroker, tenant: str) -> None:
    found = broker.search_clients(tenant, "Bloggs")
    assert any(c["name"] == "Bloggs Electrical Pty Ltd" for c in found)
    company = next(c for c in found if c["name"] == "Bloggs Electrical Pty Ltd")
    detail = broker.get_client(tenant, company["uuid"])
    assert detail["uuid"] == company["uuid"]
    assert isinstance(detail["relationships"], list)

    key = str(uuid.uuid4())
    body = {"name": f"Client Test {uuid.uuid4().hex[:6]} Pty Ltd", "business_structure": "Company"}
    created = broker.create_client(tenant, body, idempotency_key=key)
    again = broker.create_client(tenant, body, idempotency_key=key)
    assert again["uuid"] == created["uuid"]  # replayed, not a second client
    assert [c["uuid"] for c in broker.search_clients(tenant, body["name"])] == [created["uuid"]]


def test_push_runs_to_completion(broker: XpmBroker, tenant: str) -> None:
    graph = {
        "entity": {"name": f"Pushed {uuid.uuid4().hex[:6]} Pty Ltd", "business_structure": "Company"},
        "parties": [
            {"ref": "d1", "first_name": "Ada", "last_name": f"Director{uuid.uuid4().hex[:4]}"},
            {"ref": "d2", "first_name": "Bo", "last_name": f"Director{uuid.uuid4().hex[:4]}"},
        ],
        "relationships": [{"type": "Director", "related": "d1"}, {"type": "Director", "related": "d2"}],
    }
    accepted = broker.create_push(tenant, graph)
    assert accepted["status"] == "queued"
    push = broker.wait_for_push(tenant, accepted["push_id"], timeout=90)
    assert push["status"] == "completed", push


def test_sync_then_the_synced_list_in_pages(broker: XpmBroker, tenant: str) -> None:
    accepted = broker.start_sync(tenant)
    assert accepted["sync_id"]
    status = broker.wait_for_sync(tenant, timeout=120)
    assert status["synced"] is True
    listed = list(broker.iter_clients(tenant, page_size=50))  # 200 seeded clients: several pages
    uuids = [c["uuid"] for c in listed]
    assert len(uuids) == len(set(uuids)) > 50
    assert any(c["name"] == "Bloggs Electrical Pty Ltd" for c in listed)
    assert list(broker.iter_clients(tenant, updated_since="2999-01-01T00:00:00Z")) == []


def test_webhook_endpoint_and_event_log(broker: XpmBroker, tenant: str) -> None:
    endpoint = broker.get_webhook_endpoint()
    assert endpoint["status"] in {"active", "not_configured", "disabled"}
    types = [e["type"] for e in broker.iter_events(page_size=2)]  # pages of two
    assert "connection.created" in types
    first = next(broker.iter_events(page_size=1))
    assert broker.redeliver_event(first["id"])["delivery"]["status"] == "pending"


def test_errors_carry_the_problem_code(broker: XpmBroker, tenant: str) -> None:
    with pytest.raises(BrokerError) as unknown:
        broker.get_connection("nobody-here")
    assert (unknown.value.status, unknown.value.code) == (404, "tenant_not_found")
    assert unknown.value.request_id

    with pytest.raises(BrokerError) as short:
        broker.search_clients(tenant, "Bl")
    assert short.value.code == "search_too_short"

    wrong_key = XpmBroker(broker.base_url, "key_unknown", "not-the-secret")
    with pytest.raises(BrokerError) as unsigned:
        wrong_key.get_connection(tenant)
    assert unsigned.value.status == 401
