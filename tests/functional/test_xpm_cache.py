"""What a warm instance keeps between XPM calls (chalicelib.xpm.service), and when it lets go.

The caches' clock is injected, so "5 seconds later" is a step of the test, not a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from chalicelib.oauth.models import Grant
from chalicelib.tenants.models import Connection
from chalicelib.xpm import service
from tests.functional.broker import BrokerUnderTest
from tests.functional.sandbox.oauth_helpers import ALICE, BLOGGS, calls

SEARCH = "/v1/tenants/firm-1/xpm/clients?search=bloggs"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    service.forget_cached()
    monkeypatch.setattr(service.connections, "clock", fake)
    monkeypatch.setattr(service.tokens, "clock", fake)
    yield fake
    service.forget_cached()


@pytest.fixture
def connected(broker: BrokerUnderTest, clock: FakeClock) -> BrokerUnderTest:
    broker.connect("firm-1")
    return broker


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """Wrap ``service.<name>`` so each call is recorded."""
    seen: list[Any] = []
    original: Callable[..., Any] = getattr(service, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        seen.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(service, name, wrapper)
    return seen


def search(broker: BrokerUnderTest) -> Any:
    return broker.signed("GET", SEARCH)


def test_a_warm_instance_reads_the_connection_and_token_once_per_cache_time(
    connected: BrokerUnderTest, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counting(monkeypatch, "get_connection")
    token_reads = counting(monkeypatch, "valid_access_token")
    for _ in range(3):
        assert search(connected).status_code == 200
    assert (len(reads), len(token_reads)) == (1, 1)

    clock.now += service.CACHE_SECONDS - 0.1
    assert search(connected).status_code == 200
    assert (len(reads), len(token_reads)) == (1, 1)
    clock.now += 0.1  # the entries are CACHE_SECONDS old: read again
    assert search(connected).status_code == 200
    assert (len(reads), len(token_reads)) == (2, 2)


def test_a_cached_token_never_has_less_than_a_minute_left(
    connected: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token with 62 s left would be cached for 5 s: it is refreshed instead, like one with 60 s."""
    connection = Connection.get(connected.vendor.vendor_id, "firm-1")
    Grant.get(connection.grant_id).update(actions=[Grant.access_expires_at.set(time.time() + 62)])
    before = calls(connected.sandbox).get("identity.token.refresh", 0)
    assert search(connected).status_code == 200
    assert calls(connected.sandbox).get("identity.token.refresh", 0) == before + 1
    assert Grant.get(connection.grant_id).access_expires_at > time.time() + 600
    assert search(connected).status_code == 200  # the refreshed token, from the cache
    assert calls(connected.sandbox).get("identity.token.refresh", 0) == before + 1


def test_a_connection_disconnected_elsewhere_stops_within_the_cache_time(
    connected: BrokerUnderTest, clock: FakeClock
) -> None:
    """Another instance disconnects (only DynamoDB changes here, Xero still answers): a warm
    instance serves at most CACHE_SECONDS more, then answers 409 from a fresh read."""
    assert search(connected).status_code == 200
    Connection.get(connected.vendor.vendor_id, "firm-1").update(
        actions=[Connection.status.set("revoked"), Connection.grant_id.remove()]
    )
    assert search(connected).status_code == 200  # the documented staleness, bounded:
    clock.now += service.CACHE_SECONDS
    refused = search(connected)
    assert refused.status_code == 409
    assert refused.json_body["connection_status"] == "revoked"


def test_a_disconnect_stops_the_cached_connection_at_once(connected: BrokerUnderTest) -> None:
    """A real disconnect also deletes the connection at Xero: Xero's 403 drops the cache, and the
    vendor is told the connection's actual state (it is not flagged needs_reauthorisation)."""
    assert search(connected).status_code == 200
    assert connected.signed("DELETE", "/v1/tenants/firm-1/connection").status_code in (200, 204)
    refused = search(connected)
    assert refused.status_code == 409
    assert refused.json_body["connection_status"] == "revoked"
    assert Connection.get(connected.vendor.vendor_id, "firm-1").status == "revoked"
    assert service.connections.get((connected.vendor.vendor_id, "firm-1")) is None


def test_a_403_from_xero_drops_the_cached_connection_and_token(connected: BrokerUnderTest) -> None:
    assert search(connected).status_code == 200
    connection = Connection.get(connected.vendor.vendor_id, "firm-1")
    assert service.tokens.get(connection.grant_id) is not None
    alice = connected.sandbox.state.user_by_email(ALICE)
    assert alice is not None
    requests.put(
        f"{connected.sandbox.url}/_sandbox/users/{alice.user_id}/permissions",
        json={"tenant_id": BLOGGS, "can_connect": False},
        timeout=5,
    )
    refused = search(connected)
    assert (refused.status_code, refused.json_body["connection_status"]) == (409, "needs_reauthorisation")
    assert service.connections.get((connected.vendor.vendor_id, "firm-1")) is None
    assert service.tokens.get(connection.grant_id) is None
    again = search(connected)  # from a fresh read: the flagged connection, no Xero call
    assert (again.status_code, again.json_body["connection_status"]) == (409, "needs_reauthorisation")


def test_the_calling_vendor_is_read_once_per_key_cache_time(
    connected: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.tenants import keys

    keys.key_resolver().forget()
    reads: list[str] = []
    original = keys.get_vendor

    def get_vendor(vendor_id: str) -> Any:
        reads.append(vendor_id)
        return original(vendor_id)

    monkeypatch.setattr(keys, "get_vendor", get_vendor)
    for _ in range(3):
        assert search(connected).status_code == 200
    assert reads == [connected.vendor.vendor_id]
    keys.key_resolver().forget()
    assert search(connected).status_code == 200
    assert len(reads) == 2
