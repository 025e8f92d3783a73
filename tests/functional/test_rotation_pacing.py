"""Pacing of rotation: the rotation rate, the governor's app minute, Xero's app-minute 429s."""

from __future__ import annotations

import math
import threading
import time

import pytest

from chalicelib.config import get_settings
from chalicelib.oauth.models import Grant
from chalicelib.oauth.pacing import Pace, PacingDeferred, pace_refresh
from chalicelib.oauth.rotation import RotationOutcome, handle_rotation_messages, rotate_grant
from chalicelib.tenants.models import Connection
from chalicelib.xpm.errors import XpmRateLimited
from chalicelib.xpm.governor import RateBucket, governor_for
from sandbox.server import SandboxServer
from tests.functional.broker import BrokerUnderTest
from tests.functional.rotation_helpers import connected_grant, lambda_event, make_due, receive_all
from tests.functional.sandbox.oauth_helpers import (
    ALICE,
    arm_fault,
    calls,
    connect,
    list_connections,
    register_app,
)
from xpmb.bootstrap import bootstrap
from xpmb.pump import FakeLambdaContext


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _app_minute_calls(app_key: str, now: float) -> int:
    window = governor_for(app_key).windows("-", now)[2]
    try:
        return int(RateBucket.get(window.key, consistent_read=True).calls or 0)
    except RateBucket.DoesNotExist:
        return 0


def test_slots_spread_the_rate_exactly() -> None:
    assert [Pace(600).allowance(i) for i in range(3)] == [10, 10, 10]
    assert sum(Pace(342).allowance(i) for i in range(60)) == 342  # 5 or 6 a second
    assert {Pace(342).allowance(i) for i in range(60)} == {5, 6}
    assert [Pace(30).allowance(i) for i in range(4)] == [0, 1, 0, 1]
    for rate in (7, 59, 61, 342, 9000):  # any 60 consecutive slots allow at most the rate + 1
        assert (
            max(sum(Pace(rate).allowance(i) for i in range(s, s + 60)) for s in range(0, 600, 7)) <= rate + 1
        )


def test_refreshes_are_spread_over_slots_and_counted_in_the_app_minute(local_aws: str) -> None:
    bootstrap(get_settings())
    start = math.floor(time.time() / 60) * 60 + 5.0  # early in a minute: all in one app window
    clock = FakeClock(start)
    deadline = time.monotonic() + 60
    for _ in range(6):
        pace_refresh("APP1", deadline, per_minute=120, clock=clock, sleep=clock.sleep)
    # 2 a second: two at once, two after ~1 s, two after ~2 s (plus up to 10% jitter each).
    assert len(clock.slept) == 2
    assert all(0.9 <= s <= 1.1 for s in clock.slept) and 2.0 <= sum(clock.slept) <= 2.1
    # The governor counts on real time: the calls fell in this minute (or the next, at a boundary).
    # It takes the app minute in small per-instance leases (xpm/governor.py), so the stored count is
    # the 6 calls plus what this instance reserved and has not used yet: never fewer than used.
    governor = governor_for("APP1")
    unused = sum(governor._app_leases.values())
    stored = _app_minute_calls("APP1", start) + _app_minute_calls("APP1", start + 60)
    assert stored == 6 + unused
    assert unused < 20
    with pytest.raises(PacingDeferred):  # the next slot is full too and the deadline is near
        for _ in range(3):
            pace_refresh("APP1", time.monotonic() + 0.5, per_minute=120, clock=clock, sleep=clock.sleep)


def test_concurrent_workers_share_one_rate(local_aws: str) -> None:
    bootstrap(get_settings())

    def worker() -> None:
        for _ in range(3):
            pace_refresh("APP2", time.monotonic() + 30, per_minute=240)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots = {b.bucket: int(b.calls or 0) for b in RateBucket.scan(RateBucket.bucket.startswith("r#APP2#"))}
    assert sum(slots.values()) == 12
    assert max(slots.values()) <= 4  # 240 a minute: at most 4 in any one-second slot
    assert len(slots) >= 3


def test_a_spent_app_minute_defers_the_rotation_and_leaves_the_grant(
    broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    governor_for(broker.xero_client_id).count_app_call()  # e.g. an XPM proxy call
    monkeypatch.setenv("XPMB_GOVERNOR_APP_PER_MINUTE", "1")  # the app minute is now spent
    before = calls(broker.sandbox).get("identity.token.refresh", 0)
    with pytest.raises(PacingDeferred):
        rotate_grant(grant.grant_id, deadline=time.monotonic() + 0.2)
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version and stored.consecutive_failures is None
    assert calls(broker.sandbox).get("identity.token.refresh", 0) == before
    # Through the worker: reported as a partial failure, so SQS delivers it again later.
    from chalicelib.oauth.rotation import plan_rotation

    plan_rotation()
    messages = receive_all("rotation")
    context = FakeLambdaContext("rotation_worker", timeout_seconds=5.5)  # 0.5 s after the margin
    result = handle_rotation_messages(lambda_event("rotation", messages), context)
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}


def test_a_429_from_connections_blocks_the_app_in_the_governor(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    arm_fault(broker.sandbox, "connections", "rate_limit", problem="appminute", retry_after=30)
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED  # the new pair is stored anyway
    assert Connection.get(broker.vendor.vendor_id, "firm-1").status == "active"
    with pytest.raises(XpmRateLimited) as refused:
        governor_for(broker.xero_client_id).count_app_call()
    assert refused.value.problem == "appminute" and refused.value.retry_after >= 25


def test_the_sandbox_refuses_connections_calls_beyond_the_app_minute(sandbox: SandboxServer) -> None:
    sandbox.state.config.limits.app_per_minute = 2
    app = register_app(sandbox)
    tokens = connect(sandbox, app, ALICE)
    statuses = [list_connections(sandbox, tokens["access_token"]) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[1].headers["X-AppMinLimit-Remaining"] == "0"
    assert statuses[2].headers["X-Rate-Limit-Problem"] == "appminute"
    assert 1 <= int(statuses[2].headers["Retry-After"]) <= 60
    assert sandbox.state.calls["connections.rate_limited"] == 1


def test_the_worker_consumers_have_bounded_concurrency() -> None:
    from app import app

    sources = {s.name: s for s in app.event_sources if type(s).__name__ == "SQSEventConfig"}
    assert sources["rotation_worker"].maximum_concurrency == 5
    assert sources["token_rescue_worker"].maximum_concurrency == 2
    assert sources["token_rescue_worker"].queue.endswith("token_rescue")
