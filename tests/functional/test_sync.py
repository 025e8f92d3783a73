"""The change feed against sandbox mutations: exactly the right events, none for unchanged data.

3.0 (the default): a full ``client.api/list`` first, then ``modifiedsince``; 3.1: ``paged-list``
with clients that vanish from it read back with ``get``. Rate limits (the broker's governor,
Xero's 429, the reserve kept for vendors) stop a sync without losing progress.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from chalicelib.config import reset_settings
from chalicelib.oauth.models import Grant
from chalicelib.sync.models import ClientSnapshot, snapshot_key
from chalicelib.tenants.models import Connection
from chalicelib.xpm.governor import RateBucket
from tests.functional.broker import BrokerUnderTest
from tests.functional.sandbox.oauth_helpers import BLOGGS, arm_fault, calls
from tests.functional.sync_helpers import (
    CLIENT_EVENTS,
    Practice,
    client_events,
    events,
    last_completed,
    run_sync,
    sync_state,
)

TENANT = "firm-1"
THIN_KEYS = {"tenant_ref", "client_uuid", "version", "sync_id", "changed_fields", "deleted"}


@pytest.fixture
def practice(broker: BrokerUnderTest) -> Practice:
    broker.connect(TENANT)
    return Practice(broker.sandbox)


@pytest.fixture
def paged(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """API 3.1 with pages of 50, so the 200-client practice takes several pages."""
    monkeypatch.setenv("XPMB_XPM_API_VERSION", "3.1")
    monkeypatch.setenv("XPMB_SYNC_PAGE_SIZE", "50")
    reset_settings()
    yield
    reset_settings()


def _sync(broker: BrokerUnderTest) -> dict[str, object]:
    outcomes = run_sync(broker.vendor.vendor_id, TENANT)
    assert outcomes[-1].status == "completed", outcomes
    return last_completed(broker.vendor.vendor_id)


def _new_events(broker: BrokerUnderTest, before: int) -> list[tuple[str, str]]:
    return client_events(broker.vendor.vendor_id)[before:]


# -- 3.0: full list, then modifiedsince ------------------------------------------------------------


def test_first_sync_is_a_silent_baseline_of_every_client(broker: BrokerUnderTest, practice: Practice) -> None:
    listed = [c for c in practice.clients() if not c["IsDeleted"]]
    completed = _sync(broker)
    assert completed["initial"] is True
    assert completed["counts"] == {
        "created": len(listed),
        "updated": 0,
        "archived": 0,
        "deleted": 0,
        "unchanged": 0,
        "fetched": len(listed),
    }
    assert client_events(broker.vendor.vendor_id) == []  # a baseline announces no client
    state = sync_state(broker.vendor.vendor_id, TENANT)
    assert (state.mode, state.baseline_done, state.xero_tenant_id) == ("full_list", True, BLOGGS)
    rows = list(ClientSnapshot.query(snapshot_key(broker.vendor.vendor_id, TENANT, BLOGGS)))
    assert {r.client_uuid for r in rows} == {c["UUID"] for c in listed}
    assert all("tax_number" not in r.data for r in rows)  # never stored (checklist E10)


def test_create_update_archive_give_exactly_one_event_each(
    broker: BrokerUnderTest, practice: Practice
) -> None:
    _sync(broker)
    active = practice.active()
    updated, archived = active[3]["UUID"], active[7]["UUID"]
    practice.patch(updated, Email="new.address@example.com", Phone="(02) 9999 0000")
    practice.patch(archived, IsArchived=True)
    created = practice.insert("Brand New Holdings Pty Ltd", BusinessStructure="Company")

    completed = _sync(broker)

    found = events(broker.vendor.vendor_id, *CLIENT_EVENTS)
    assert sorted((e.type, e.data["client_uuid"]) for e in found) == sorted(
        [
            ("xpm.client.created", created),
            ("xpm.client.updated", updated),
            ("xpm.client.archived", archived),
        ]
    )
    by_type = {e.type: e.data for e in found}
    assert by_type["xpm.client.updated"]["changed_fields"] == ["email", "phone"]
    assert by_type["xpm.client.updated"]["version"] == 2
    assert by_type["xpm.client.archived"]["changed_fields"] == ["is_archived"]
    assert by_type["xpm.client.archived"]["deleted"] is False
    assert by_type["xpm.client.created"]["version"] == 1
    for data in by_type.values():
        assert set(data) <= THIN_KEYS  # thin: ids and field names, never values (E10)
    assert completed["initial"] is False
    assert completed["counts"]["created"] == 1
    assert completed["counts"]["updated"] == 1
    assert completed["counts"]["archived"] == 1
    # modifiedsince: only the three changed clients came back, not the practice.
    assert completed["counts"]["fetched"] == 3
    assert sync_state(broker.vendor.vendor_id, TENANT).mode == "modified_since"


def test_a_sync_with_no_change_announces_nothing(broker: BrokerUnderTest, practice: Practice) -> None:
    _sync(broker)
    practice.patch(practice.active()[0]["UUID"], Website="https://example.com")
    _sync(broker)
    before = len(client_events(broker.vendor.vendor_id))
    completed = _sync(broker)  # the overlap re-reads the changed client: same fingerprint
    assert _new_events(broker, before) == []
    assert completed["counts"]["unchanged"] == completed["counts"]["fetched"] >= 1


def test_same_data_rewritten_and_non_summary_fields_are_no_change(
    broker: BrokerUnderTest, practice: Practice
) -> None:
    _sync(broker)
    client = practice.active()[5]
    practice.patch(client["UUID"], Name=client["Name"], Email=client["Email"])  # same values, newer stamp
    practice.patch(practice.active()[6]["UUID"], TaxNumber="123456789")  # not a synced field
    completed = _sync(broker)
    assert client_events(broker.vendor.vendor_id) == []
    assert completed["counts"]["unchanged"] == 2


def test_periodic_full_pass_finds_deleted_clients(
    broker: BrokerUnderTest, practice: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sync(broker)
    gone = practice.active()[2]["UUID"]
    practice.patch(gone, IsDeleted=True)  # modifiedsince never lists deleted clients
    _sync(broker)
    assert client_events(broker.vendor.vendor_id) == []
    state = sync_state(broker.vendor.vendor_id, TENANT)
    state.update(actions=[type(state).last_full_pass_at.set(time.time() - 8 * 86400)])
    completed = _sync(broker)
    assert sync_state(broker.vendor.vendor_id, TENANT).mode == "full_list"
    [event] = events(broker.vendor.vendor_id, *CLIENT_EVENTS)
    assert (event.type, event.data["client_uuid"], event.data["deleted"]) == (
        "xpm.client.archived",
        gone,
        True,
    )
    assert completed["counts"]["deleted"] == 1


# -- 3.1: paged-list -------------------------------------------------------------------------------


def test_paged_baseline_reads_every_page(broker: BrokerUnderTest, practice: Practice, paged: None) -> None:
    active = practice.active()
    completed = _sync(broker)
    assert completed["counts"]["created"] == len(active)
    state = sync_state(broker.vendor.vendor_id, TENANT)
    assert state.mode == "paged"
    assert calls(broker.sandbox)["xpm.client.paged-list"] == math.ceil(len(active) / 50)
    assert client_events(broker.vendor.vendor_id) == []


def test_paged_archive_delete_and_unarchive(broker: BrokerUnderTest, practice: Practice, paged: None) -> None:
    _sync(broker)
    active = practice.active()
    archived, deleted, updated = active[12]["UUID"], active[60]["UUID"], active[130]["UUID"]
    seeded_archived = next(c["UUID"] for c in practice.clients() if c["IsArchived"])
    practice.patch(archived, IsArchived=True)
    practice.patch(deleted, IsDeleted=True)
    practice.patch(updated, Name="Renamed Client")
    practice.patch(seeded_archived, IsArchived=False)  # never seen by 3.1: new to the feed
    gets = calls(broker.sandbox).get("xpm.client.get", 0)

    _sync(broker)

    found = {e.data["client_uuid"]: e for e in events(broker.vendor.vendor_id, *CLIENT_EVENTS)}
    assert {u: e.type for u, e in found.items()} == {
        archived: "xpm.client.archived",
        deleted: "xpm.client.archived",
        updated: "xpm.client.updated",
        seeded_archived: "xpm.client.created",
    }
    assert found[archived].data["deleted"] is False
    assert found[deleted].data["deleted"] is True
    assert found[updated].data["changed_fields"] == ["name"]
    # Only the two clients missing from the pages were read one by one.
    assert calls(broker.sandbox)["xpm.client.get"] == gets + 2

    before = len(client_events(broker.vendor.vendor_id))
    practice.patch(archived, IsArchived=False)
    _sync(broker)
    [(kind, uuid)] = _new_events(broker, before)
    assert (kind, uuid) == ("xpm.client.updated", archived)
    assert events(broker.vendor.vendor_id, "xpm.client.updated")[-1].data["changed_fields"] == ["is_archived"]


def test_paged_sync_with_no_change_reads_pages_only(
    broker: BrokerUnderTest, practice: Practice, paged: None
) -> None:
    _sync(broker)
    practice.patch(practice.active()[0]["UUID"], IsArchived=True)
    _sync(broker)
    before = len(client_events(broker.vendor.vendor_id))
    seen = Counter(calls(broker.sandbox))
    completed = _sync(broker)
    assert _new_events(broker, before) == []
    made = Counter(calls(broker.sandbox)) - seen
    assert set(made) == {"xpm.client.paged-list"}  # the archived client is not read again
    assert completed["counts"]["unchanged"] == len(practice.active())


# -- budgets and resuming --------------------------------------------------------------------------


def _clear_governor_blocks() -> None:
    for bucket in RateBucket.scan():
        if bucket.blocked_until is not None:
            bucket.update(actions=[RateBucket.blocked_until.remove(), RateBucket.block_problem.remove()])


def test_a_429_mid_sync_resumes_at_the_page_it_stopped_at(
    broker: BrokerUnderTest, practice: Practice, paged: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.sync.engine import Pacer
    from chalicelib.sync.jobs import acquire, drive, request_sync

    _sync(broker)
    active = practice.active()
    changed = [active[10]["UUID"], active[75]["UUID"], active[160]["UUID"]]  # pages 1, 2 and 4
    for uuid in changed:
        practice.patch(uuid, ReferralSource="Website")
    before = calls(broker.sandbox).get("xpm.client.paged-list", 0)

    from chalicelib.xpm.client import XpmClient

    real_page = XpmClient.paged_clients
    pages_asked: list[str | None] = []

    def page_then_refuse(client: XpmClient, page_size: int = 100, page_token: str | None = None) -> object:
        pages_asked.append(page_token)
        if len(pages_asked) == 3:  # Xero refuses the third page
            arm_fault(broker.sandbox, "xpm.client.paged-list", "rate_limit", retry_after=30)
        return real_page(client, page_size, page_token)

    monkeypatch.setattr(XpmClient, "paged_clients", page_then_refuse)
    state, _ = request_sync(broker.vendor.vendor_id, TENANT, "api", enqueue=False)
    leased = acquire(state.sync_key, str(state.sync_id), "lease_test", time.time())
    assert leased is not None
    outcome = drive(leased, "lease_test", Pacer())
    assert (outcome.status, outcome.reason, outcome.delay) == ("deferred", "rate_limited:minute", 30)
    stored = sync_state(broker.vendor.vendor_id, TENANT)
    assert (stored.status, stored.pages, stored.page_token is not None) == ("running", 2, True)
    assert stored.lease_owner is None and stored.resume_at == pytest.approx(time.time() + 30, abs=5)
    assert sorted(u for _, u in client_events(broker.vendor.vendor_id)) == sorted(changed[:2])

    monkeypatch.setattr(XpmClient, "paged_clients", real_page)
    _clear_governor_blocks()  # the 429 blocked the tenant for Retry-After: skip the wait
    outcomes = run_sync(broker.vendor.vendor_id, TENANT)  # joins the same run
    assert outcomes[-1].status == "completed"
    assert last_completed(broker.vendor.vendor_id)["sync_id"] == state.sync_id
    assert sorted(u for _, u in client_events(broker.vendor.vendor_id)) == sorted(changed)  # once each
    # Pages 1-2, the refused page 3, then pages 3-4: nothing read twice.
    pages = math.ceil(len(active) / 50)
    assert calls(broker.sandbox)["xpm.client.paged-list"] - before == pages + 1


def test_the_governor_stops_a_sync_before_xero_would(
    broker: BrokerUnderTest, practice: Practice, paged: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XPMB_GOVERNOR_PER_MINUTE", "2")
    from chalicelib.sync.jobs import message_of, request_sync, run_message

    state, _ = request_sync(broker.vendor.vendor_id, TENANT, "api", enqueue=False)
    outcome = run_message(message_of(state), deadline=None)
    assert (outcome.status, outcome.reason) == ("deferred", "rate_limited:minute")
    assert calls(broker.sandbox)["xpm.client.paged-list"] == 2  # the third never left
    assert sync_state(broker.vendor.vendor_id, TENANT).pages == 2
    monkeypatch.delenv("XPMB_GOVERNOR_PER_MINUTE")
    assert run_sync(broker.vendor.vendor_id, TENANT)[-1].status == "completed"
    assert calls(broker.sandbox)["xpm.client.paged-list"] == math.ceil(len(practice.active()) / 50)


def test_a_sync_leaves_the_reserve_to_vendors(
    broker: BrokerUnderTest, practice: Practice, paged: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests.put(
        f"{broker.sandbox.url}/_sandbox/limits", json={"per_minute": 8}, timeout=10
    ).raise_for_status()
    monkeypatch.setenv("XPMB_SYNC_MINUTE_RESERVE", "5")
    from chalicelib.sync.jobs import message_of, request_sync, run_message

    state, _ = request_sync(broker.vendor.vendor_id, TENANT, "api", enqueue=False)
    outcome = run_message(message_of(state), deadline=None)
    assert (outcome.status, outcome.reason) == ("deferred", "minute_budget")
    assert outcome.delay == 60
    assert calls(broker.sandbox)["xpm.client.paged-list"] == 3  # 8 - 3 = 5 left: stop
    response = broker.signed("GET", f"/v1/tenants/{TENANT}/xpm/clients?search=Bloggs")
    assert response.status_code == 200  # the vendor's live search still has room


def test_an_expired_access_token_is_refreshed_once_through_the_single_flight_path(
    broker: BrokerUnderTest, practice: Practice, paged: None
) -> None:
    grant_id = Connection.get(broker.vendor.vendor_id, TENANT).grant_id
    assert grant_id
    Grant(grant_id).update(actions=[Grant.access_expires_at.set(time.time() - 5)])
    refreshes = calls(broker.sandbox).get("identity.token.refresh", 0)
    _sync(broker)
    assert calls(broker.sandbox)["identity.token.refresh"] == refreshes + 1


def test_a_revoked_connection_fails_the_sync_and_leaves_the_schedule(
    broker: BrokerUnderTest, practice: Practice
) -> None:
    from chalicelib.sync.jobs import message_of, request_sync, run_message

    state, _ = request_sync(broker.vendor.vendor_id, TENANT, "schedule", enqueue=False)
    assert broker.signed("DELETE", f"/v1/tenants/{TENANT}/connection").status_code == 204
    outcome = run_message(message_of(state), deadline=None)
    assert (outcome.status, outcome.reason) == ("failed", "connection_not_active")
    done = last_completed(broker.vendor.vendor_id)
    assert (done["status"], done["error"]) == ("failed", "connection_not_active")
    stored = sync_state(broker.vendor.vendor_id, TENANT)
    assert stored.next_sync_at is None and stored.sync_shard is None  # off the planner's index
    broker.connect(TENANT)  # reconnecting puts it back, due now
    assert sync_state(broker.vendor.vendor_id, TENANT).next_sync_at is not None


def test_duplicate_and_stale_messages_do_nothing(broker: BrokerUnderTest, practice: Practice) -> None:
    from chalicelib.sync.jobs import acquire, message_of, request_sync, run_message

    state, _ = request_sync(broker.vendor.vendor_id, TENANT, "api", enqueue=False)
    assert acquire(state.sync_key, str(state.sync_id), "lease_other", time.time()) is not None
    assert run_message(message_of(state), deadline=None).status == "busy"  # someone drives it
    other = {"sync_key": state.sync_key, "sync_id": "sync_0000000000000old"}
    assert run_message(other, deadline=None).status == "obsolete"
    assert calls(broker.sandbox).get("xpm.client.list", 0) == 0


def test_xero_failing_defers_with_backoff_then_fails_the_sync(
    broker: BrokerUnderTest, practice: Practice
) -> None:
    from chalicelib.sync.jobs import MAX_TRANSIENT_FAILURES, message_of, request_sync, run_message

    arm_fault(broker.sandbox, "xpm.client.list", "server_error", count=MAX_TRANSIENT_FAILURES)
    state, _ = request_sync(broker.vendor.vendor_id, TENANT, "api", enqueue=False)
    delays = []
    for _ in range(MAX_TRANSIENT_FAILURES - 1):
        stored = sync_state(broker.vendor.vendor_id, TENANT)
        outcome = run_message(message_of(state), deadline=None, now=float(stored.resume_at or time.time()))
        assert (outcome.status, outcome.reason) == ("deferred", "upstream:http_5xx")
        delays.append(outcome.delay)
    assert delays == [60, 120, 240, 480]
    stored = sync_state(broker.vendor.vendor_id, TENANT)
    outcome = run_message(message_of(state), deadline=None, now=float(stored.resume_at or 0))
    assert (outcome.status, outcome.reason) == ("failed", "upstream_unavailable")
    done = last_completed(broker.vendor.vendor_id)
    assert (done["status"], done["error"]) == ("failed", "upstream_unavailable")
    assert sync_state(broker.vendor.vendor_id, TENANT).next_sync_at is not None  # still scheduled


def test_a_message_early_for_its_deferred_run_waits_on_the_queue(
    broker: BrokerUnderTest, practice: Practice
) -> None:
    from chalicelib.sync.jobs import message_of, request_sync, run_message
    from chalicelib.sync.models import SyncState
    from tests.functional.sync_helpers import queue_url

    state, _ = request_sync(broker.vendor.vendor_id, TENANT, "api", enqueue=False)
    SyncState(state.sync_key).update(actions=[SyncState.resume_at.set(time.time() + 3600)])
    outcome = run_message(message_of(state), deadline=None)
    assert outcome.status == "waiting" and outcome.delay == pytest.approx(3600, abs=5)
    from chalicelib.aws import aws_client

    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=queue_url(), AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # back on the queue, delayed
    assert calls(broker.sandbox).get("xpm.client.list", 0) == 0
