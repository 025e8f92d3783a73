"""Rotation policy over simulated months, health events, and the local demo of docs/rotation.md.

The broker follows the sandbox clock here (``XPMB_XERO_CLOCK_URL``, local stage only), exactly as
``make run`` wires it, and the pump drives the planner schedule and the worker queue.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
import requests

from chalicelib.config import get_settings, reset_settings
from chalicelib.oauth.models import Grant
from chalicelib.oauth.rotation import RotationOutcome, plan_rotation, rotate_grant, run_planner
from chalicelib.oauth.xero_clock import forget_offset, xero_now
from chalicelib.tenants.models import Connection
from tests.functional.broker import BrokerUnderTest
from tests.functional.rotation_helpers import (
    connected_grant,
    events_of,
    make_due,
    sandbox_accepts,
    stored_refresh_token,
)
from tests.functional.sandbox.oauth_helpers import CAROL, HARBOUR, calls
from xpmb.pump import FakeLambdaContext, Pump

DAY = 86400
REFRESHES = "identity.token.refresh"


@pytest.fixture
def xero_clock(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The broker reads Xero's time from the sandbox clock, as on the local stack."""
    url = f"{broker.sandbox.url}/_sandbox/clock"
    monkeypatch.setenv("XPMB_XERO_CLOCK_URL", url)
    reset_settings()
    forget_offset()
    yield url
    forget_offset()


def _advance(broker: BrokerUnderTest, seconds: float) -> None:
    response = requests.post(
        f"{broker.sandbox.url}/_sandbox/clock/advance", json={"seconds": seconds}, timeout=5
    )
    response.raise_for_status()
    forget_offset()  # the broker trusts a fetched offset for 2 s; a person waits that long anyway


def _pump() -> Pump:
    from app import app

    return Pump(app, get_settings(), wait_seconds=0)


def _run_schedule_and_queues(pump: Pump) -> None:
    pump.fire_due_schedules(force=True)
    while pump.deliver_sqs_once():
        pass


def test_the_documented_demo_advancing_the_sandbox_clock_shows_a_rotation(
    broker: BrokerUnderTest, xero_clock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from xpmb.cli import main

    grant = connected_grant(broker)  # step 1: connect on /demo
    pump = _pump()
    _run_schedule_and_queues(pump)  # nothing is due yet
    assert calls(broker.sandbox).get(REFRESHES, 0) == 0
    _advance(broker, 21 * DAY)  # step 2: POST /_sandbox/clock/advance {"seconds": 1814400}
    assert main(["connections", "rotate", "--due", "--dry-run"]) == 0  # step 3 (optional): see it due
    assert "would rotate 1 grant(s)" in capsys.readouterr().out
    _run_schedule_and_queues(pump)  # step 4: within a minute the pump's planner and worker run
    assert calls(broker.sandbox).get(REFRESHES, 0) == 1
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version + 1
    assert stored.next_rotation_at == pytest.approx(xero_now() + 20 * DAY, abs=60)
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))
    assert main(["connections", "rotate", "--due", "--dry-run"]) == 0
    assert "would rotate 0 grant(s)" in capsys.readouterr().out
    # Connecting still works on the moved clock (the id_token is checked against Xero's time).
    other = connected_grant(broker, "firm-2", user=CAROL, tenant_id=HARBOUR)
    assert other.next_rotation_at == pytest.approx(xero_now() + 20 * DAY, abs=60)


def test_ninety_idle_days_keep_every_connection_refreshable(broker: BrokerUnderTest, xero_clock: str) -> None:
    grants = [
        connected_grant(broker, "firm-1"),
        connected_grant(broker, "firm-2", user=CAROL, tenant_id=HARBOUR),
    ]
    pump = _pump()
    for _ in range(18):  # 90 days in 5-day steps, no API traffic, only the hourly job
        _advance(broker, 5 * DAY)
        _run_schedule_and_queues(pump)
        assert plan_rotation(enqueue=False).oldest_age_days < 45
    for grant in grants:
        stored = Grant.get(grant.grant_id, consistent_read=True)
        # Rotations at days 20, 40, 60, 80; the change feed's first sync (due at connect) may have
        # refreshed once more on its own, through the same single-flight path.
        assert stored.status == "active" and grant.version + 4 <= stored.version <= grant.version + 5
        assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))
    assert not events_of(broker.vendor.vendor_id, "connection.expiring_soon")
    assert all(c.status == "active" for c in Connection.query(broker.vendor.vendor_id))


def test_without_rotation_the_age_alarm_fires_at_45_days_and_expiring_soon_once_at_50(
    broker: BrokerUnderTest,
    xero_clock: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant = connected_grant(broker)
    _advance(broker, 44 * DAY)
    with caplog.at_level(logging.ERROR, logger="xpmb.rotation"):
        assert plan_rotation(enqueue=False).oldest_age_days < 45
        assert not [r for r in caplog.records if "rotation alarm" in r.message]
        _advance(broker, 1.5 * DAY)  # the sweep is "disabled": the planner runs, nothing rotates
        run_planner({}, FakeLambdaContext("rotation_planner"))
        assert [r for r in caplog.records if "rotation alarm" in r.message]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "OldestGrantAgeDays" in line]
    assert emf and max(emf[-1]["OldestGrantAgeDays"]) >= 45  # the metric the 45-day alarm watches
    assert not events_of(broker.vendor.vendor_id, "connection.expiring_soon")
    _advance(broker, 5 * DAY)  # day 50.5
    plan_rotation(enqueue=False)
    plan_rotation(enqueue=False)
    (event,) = events_of(broker.vendor.vendor_id, "connection.expiring_soon")
    assert event.data["tenant_ref"] == "firm-1"
    assert event.data["refresh_token_expires_at"] == int(
        Grant.get(grant.grant_id).refresh_issued_at + 60 * DAY
    )


def test_the_idle_threshold_is_configurable(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XPMB_ROTATE_AFTER_DAYS", "10")
    grant = connected_grant(broker)
    assert Grant.get(grant.grant_id).next_rotation_at == pytest.approx(time.time() + 10 * DAY, abs=60)
    make_due(grant.grant_id)
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.next_rotation_at == pytest.approx(time.time() + 10 * DAY, abs=60)


def test_invalid_client_is_one_vendor_event_across_grants(broker: BrokerUnderTest) -> None:
    alice = connected_grant(broker, "firm-1")
    carol = connected_grant(broker, "firm-2", user=CAROL, tenant_id=HARBOUR)
    assert alice.grant_id != carol.grant_id
    app = broker.sandbox.state.apps[broker.xero_client_id]
    secret, app.client_secret = app.client_secret, "rotated-in-the-developer-portal"
    try:
        for grant in (alice, carol, alice, carol):
            make_due(grant.grant_id)
            assert rotate_grant(grant.grant_id) == RotationOutcome.APP_MISCONFIGURED
    finally:
        app.client_secret = secret
    (event,) = events_of(broker.vendor.vendor_id, "app.misconfigured")
    assert event.data == {"xero_error": "invalid_client"}
    assert not events_of(broker.vendor.vendor_id, "connection.needs_reauthorisation")
    assert all(c.status == "active" for c in Connection.query(broker.vendor.vendor_id))
