"""20,000 clients: a whole practice synced (3.1 pages of 500), then 1 % changed, then nothing.

Runtime stays reasonable because a baseline writes rows by BatchWriteItem and fingerprints by
whole bucket, and later syncs write only what changed (the fingerprints load in one BatchGet).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest
import requests

from chalicelib.config import reset_settings
from tests.functional.broker import BrokerUnderTest
from tests.functional.sandbox.oauth_helpers import calls
from tests.functional.sync_helpers import Practice, body_of, client_events, last_completed, run_sync

TENANT = "firm-big"
CLIENTS = 20_000


@pytest.fixture
def big_practice(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Practice]:
    """3.1 pages of 500; Xero's minute limit lifted on both sides (this measures scale: the limits
    have their own tests), so three back-to-back syncs need not wait for the next minute."""
    monkeypatch.setenv("XPMB_XPM_API_VERSION", "3.1")
    monkeypatch.setenv("XPMB_GOVERNOR_PER_MINUTE", "100000")
    reset_settings()
    unlimited = {"per_minute": 100_000, "per_day": 1_000_000}
    requests.put(f"{broker.sandbox.url}/_sandbox/limits", json=unlimited, timeout=10).raise_for_status()
    broker.connect(TENANT)
    practice = Practice(broker.sandbox)
    practice.reseed(CLIENTS)
    yield practice
    reset_settings()


@pytest.mark.timeout(600)
def test_twenty_thousand_clients(broker: BrokerUnderTest, big_practice: Practice) -> None:
    vendor_id = broker.vendor.vendor_id
    active = big_practice.active()
    assert len(active) > 18_000

    assert run_sync(vendor_id, TENANT)[-1].status == "completed"
    baseline = last_completed(vendor_id)
    assert baseline["initial"] is True
    assert baseline["counts"]["created"] == baseline["counts"]["fetched"] == len(active)
    assert calls(broker.sandbox)["xpm.client.paged-list"] == math.ceil(len(active) / 500)
    assert client_events(vendor_id) == []

    changed = random.Random(6).sample([c["UUID"] for c in active], len(active) // 100)
    for uuid in changed:
        big_practice.patch(uuid, Phone="(02) 5555 0101")
    assert run_sync(vendor_id, TENANT)[-1].status == "completed"
    second = last_completed(vendor_id)
    assert second["counts"]["updated"] == len(changed)
    assert second["counts"]["unchanged"] == len(active) - len(changed)
    assert sorted(u for _, u in client_events(vendor_id)) == sorted(changed)

    assert run_sync(vendor_id, TENANT)[-1].status == "completed"
    assert last_completed(vendor_id)["counts"]["unchanged"] == len(active)
    assert len(client_events(vendor_id)) == len(changed)

    page = body_of(broker.signed("GET", f"/v1/tenants/{TENANT}/xpm/clients?limit=500"))
    assert page["synced"] is True and len(page["clients"]) == 500 and page["next_cursor"]
