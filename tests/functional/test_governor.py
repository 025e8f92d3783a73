"""The rate governor against DynamoDB (moto over HTTP): Xero's limits before Xero applies them (B10).

Every test uses its own app key, so budgets never leak between tests or Hypothesis examples, and an
injected clock, so windows and leases move only when a test says so.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chalicelib.config import get_settings, reset_settings
from chalicelib.errors import ConfigurationError
from chalicelib.storage import StorageUnavailable
from chalicelib.xpm.errors import XpmRateLimited
from chalicelib.xpm.governor import (
    DAY,
    GovernorLimits,
    Permit,
    RateBucket,
    RateGovernor,
    Window,
    governor_for,
    limits_from_env,
)
from xpmb.bootstrap import bootstrap

DAY0 = 20_000 * DAY  # a UTC midnight
T0 = DAY0 + 3_600 + 15  # 15 s into a minute


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def tables(moto_endpoint: str) -> Iterator[str]:
    """What ``local_aws`` + ``bootstrap`` give, once for the module rather than per test.

    Every test uses its own app key, so budgets never meet and one reset is enough; a reset and
    bootstrap per test would double the module's run time.
    """
    import requests

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        patch.setenv("XPMB_STAGE", "local")
        reset_settings()
        bootstrap(get_settings())
        yield moto_endpoint
    reset_settings()


def make_governor(clock: FakeClock, app_key: str | None = None, **limits: Any) -> RateGovernor:
    limits.setdefault("slot_wait_seconds", 0)  # refuse at once, unless a test is about waiting
    return RateGovernor(app_key or f"app{uuid.uuid4().hex[:12]}", GovernorLimits(**limits), clock)


def call(governor: RateGovernor, tenant: str = "tenant-a") -> dict[str, str]:
    """One permitted call; its remaining-budget headers."""
    with governor.permit(tenant) as permit:
        return permit.remaining()


def refusal(governor: RateGovernor, tenant: str = "tenant-a") -> XpmRateLimited:
    with pytest.raises(XpmRateLimited) as refused, governor.permit(tenant):
        pass
    return refused.value


def test_the_61st_call_in_a_minute_is_refused_until_the_window_resets(tables: str) -> None:
    clock = FakeClock(T0 + 0.5)  # 15.5 s into the minute: Retry-After rounds up
    governor = make_governor(clock)  # Xero's own limits (xero-reference §2.1)
    for n in range(60):
        assert call(governor)["X-RateLimit-Minute-Remaining"] == str(59 - n)

    refused = refusal(governor)
    assert (refused.status, refused.code, refused.problem) == (429, "rate_limited", "minute")
    assert refused.retry_after == 45
    assert refused.headers["Retry-After"] == "45"

    clock.advance(44)
    assert refusal(governor).retry_after == 1
    clock.advance(0.5)
    # A new window; the two refused calls were never counted against the day.
    assert call(governor) == {"X-RateLimit-Minute-Remaining": "59", "X-RateLimit-Day-Remaining": "4939"}


def test_the_day_budget_spans_minutes_and_resets_at_utc_midnight(tables: str) -> None:
    clock = FakeClock(DAY0 + DAY - 150)
    governor = make_governor(clock, per_minute=3, per_day=5)
    for _ in range(3):
        call(governor)
    assert refusal(governor).problem == "minute"
    clock.advance(60)
    assert call(governor)["X-RateLimit-Day-Remaining"] == "1"
    assert call(governor)["X-RateLimit-Day-Remaining"] == "0"

    refused = refusal(governor)
    assert (refused.problem, refused.retry_after) == ("day", 90)
    clock.advance(90)
    assert call(governor)["X-RateLimit-Day-Remaining"] == "4"


def test_the_app_minute_budget_is_shared_by_all_tenants_of_one_app(tables: str) -> None:
    clock = FakeClock(T0)
    governor = make_governor(clock, app_per_minute=3)
    call(governor, "tenant-a")
    call(governor, "tenant-a")
    call(governor, "tenant-b")

    for tenant in ("tenant-a", "tenant-b", "tenant-c"):
        refused = refusal(governor, tenant)
        assert (refused.problem, refused.retry_after) == ("appminute", 45)
    # Another Xero app has its own budget.
    call(make_governor(clock, app_per_minute=3), "tenant-a")
    clock.advance(45)
    call(governor, "tenant-c")


def test_exactly_five_of_twenty_simultaneous_callers_hold_a_permit(tables: str) -> None:
    governor = make_governor(FakeClock(T0), per_minute=100, app_per_minute=100)
    callers = 20
    start = threading.Barrier(callers)
    decided = threading.Semaphore(0)
    finish = threading.Event()
    lock = threading.Lock()
    holding, peak = 0, 0
    outcomes: list[str] = []

    def caller() -> None:
        nonlocal holding, peak
        start.wait()
        try:
            with governor.permit("tenant-a"):
                with lock:
                    holding += 1
                    peak = max(peak, holding)
                    outcomes.append("held")
                decided.release()
                finish.wait(timeout=20)
                with lock:
                    holding -= 1
        except XpmRateLimited as refused:
            with lock:
                outcomes.append(f"{refused.problem}/{refused.retry_after}")
            decided.release()

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for _ in range(callers):  # everyone has either a permit (still held) or a refusal
        assert decided.acquire(timeout=20)
    finish.set()
    for thread in threads:
        thread.join(timeout=20)

    assert peak == 5
    assert Counter(outcomes) == {"held": 5, "concurrent/1": 15}
    # Every slot came back: five can hold at once again, and a sixth cannot.
    with ExitStack() as holders:
        for _ in range(5):
            holders.enter_context(governor.permit("tenant-a"))
        assert refusal(governor).problem == "concurrent"


def test_a_crashed_holder_frees_its_slot_when_the_lease_ends(tables: str) -> None:
    clock = FakeClock(T0)
    governor = make_governor(clock, concurrent=1, lease_seconds=30)
    crashed = governor.permit("tenant-a")
    crashed.__enter__()  # a Lambda that died mid-call: never exits

    clock.advance(29)
    assert (refusal(governor).problem, refusal(governor).retry_after) == ("concurrent", 1)
    clock.advance(1)  # the stored lease_until has passed; the item is still there (D6)
    successor = governor.permit("tenant-a")
    successor.__enter__()

    crashed.__exit__(None, None, None)  # a late exit must not free the successor's slot
    assert refusal(governor).problem == "concurrent"
    successor.__exit__(None, None, None)
    call(governor)


def test_the_slot_is_released_when_the_call_raises(tables: str) -> None:
    governor = make_governor(FakeClock(T0), concurrent=1)
    with pytest.raises(RuntimeError, match="xpm exploded"), governor.permit("tenant-a"):
        raise RuntimeError("xpm exploded")
    call(governor)


def test_two_lambdas_share_one_budget(tables: str) -> None:
    clock = FakeClock(T0)
    first = make_governor(clock, app_key="shared-app", per_minute=3, concurrent=1)
    second = make_governor(clock, app_key="shared-app", per_minute=3, concurrent=1)
    call(first)
    call(second)
    with first.permit("tenant-a"):
        assert refusal(second).problem == "concurrent"
    assert refusal(second).problem == "minute"
    assert refusal(first).problem == "minute"


def test_xero_headers_tighten_the_counters_but_never_loosen_them(tables: str) -> None:
    clock = FakeClock(T0)
    governor = make_governor(clock, per_minute=10, per_day=100)
    with governor.permit("tenant-a") as permit:
        permit.observe({"X-MinLimit-Remaining": "50", "X-DayLimit-Remaining": "4000"})  # Xero's are larger
        assert permit.remaining() == {"X-RateLimit-Minute-Remaining": "9", "X-RateLimit-Day-Remaining": "99"}
        permit.observe({"x-minlimit-remaining": "2", "X-DayLimit-Remaining": "not a number"})
        assert permit.remaining()["X-RateLimit-Minute-Remaining"] == "2"

    assert call(governor)["X-RateLimit-Minute-Remaining"] == "1"
    with governor.permit("tenant-a") as permit:
        permit.observe({"X-MinLimit-Remaining": "7"})  # stale and higher: ignored
    assert refusal(governor).problem == "minute"

    clock.advance(60)
    with governor.permit("tenant-a") as permit:
        permit.observe({"X-DayLimit-Remaining": "0"})
        assert permit.remaining()["X-RateLimit-Day-Remaining"] == "0"
    assert refusal(governor).problem == "day"


def test_xero_app_minute_header_tightens_every_tenant(tables: str) -> None:
    governor = make_governor(FakeClock(T0), app_per_minute=1000)
    with governor.permit("tenant-a") as permit:
        permit.observe({"X-AppMinLimit-Remaining": "1"})
    call(governor, "tenant-b")
    assert refusal(governor, "tenant-c").problem == "appminute"


def test_an_upstream_429_blocks_the_tenant_everywhere_for_retry_after(tables: str) -> None:
    clock = FakeClock(T0)
    governor = make_governor(clock, app_key="app-blocked")
    other_lambda = make_governor(clock, app_key="app-blocked")
    with governor.permit("tenant-a") as permit:
        permit.upstream_limited(10, "minute")

    refused = refusal(other_lambda)
    assert (refused.problem, refused.retry_after) == ("minute", 10)
    call(other_lambda, "tenant-b")  # only the tenant is blocked
    clock.advance(9)
    assert refusal(governor).retry_after == 1
    clock.advance(1)
    call(governor)


def test_a_day_block_outlasts_midnight_and_a_shorter_one_does_not_cut_it(tables: str) -> None:
    clock = FakeClock(DAY0 + DAY - 3_600)
    governor = make_governor(clock)
    with governor.permit("tenant-a") as permit:
        permit.upstream_limited(7_200, "day")
        permit.upstream_limited(5, "Minute")
    clock.advance(3_600 + 1_800)  # into the next UTC day
    refused = refusal(governor)
    assert (refused.problem, refused.retry_after) == ("day", 1_800)
    clock.advance(1_800)
    call(governor)


def test_an_upstream_app_minute_429_blocks_every_tenant_of_the_app(tables: str) -> None:
    clock = FakeClock(T0)
    governor = make_governor(clock)
    with governor.permit("tenant-a") as permit:
        permit.upstream_limited(70, "AppMinute")
    clock.advance(50)  # the block covers the next app-minute window too
    refused = refusal(governor, "tenant-b")
    assert (refused.problem, refused.retry_after) == ("appminute", 20)
    clock.advance(20)
    call(governor, "tenant-b")


def test_an_upstream_concurrent_429_without_retry_after_blocks_one_second(tables: str) -> None:
    clock = FakeClock(T0)
    governor = make_governor(clock)
    with governor.permit("tenant-a") as permit:
        permit.upstream_limited(None, "concurrent")
    assert (refusal(governor).problem, refusal(governor).retry_after) == ("concurrent", 1)
    clock.advance(1)
    call(governor)


def test_a_refused_call_consumes_no_other_budget(tables: str) -> None:
    clock = FakeClock(T0)
    governor = make_governor(clock, concurrent=1, per_minute=3, per_day=50, app_per_minute=4)
    with governor.permit("tenant-a"):
        assert refusal(governor).problem == "concurrent"  # counted nothing
    assert call(governor) == {"X-RateLimit-Minute-Remaining": "1", "X-RateLimit-Day-Remaining": "48"}
    call(governor)
    assert refusal(governor).problem == "minute"  # its day count was given back
    call(governor, "tenant-b")
    assert refusal(governor, "tenant-b").problem == "appminute"  # its day and minute given back

    day, minute, app_minute = governor.windows("tenant-b", clock.now)
    assert [stored_calls(w) for w in (day, minute, app_minute)] == [1, 1, 4]
    day, minute, _ = governor.windows("tenant-a", clock.now)
    assert [stored_calls(w) for w in (day, minute)] == [3, 3]
    clock.advance(45)
    assert call(governor)["X-RateLimit-Day-Remaining"] == "46"


def stored_calls(window: Window) -> int:
    """What the window's item holds for it (the tenant's minute shares the day's item)."""
    item = RateBucket.get(window.key, consistent_read=True)
    if window.problem == "minute" and item.minute != window.index:
        return 0
    return int(getattr(item, window.attribute) or 0)


def test_storage_errors_become_503_without_aws_detail(
    tables: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XPMB_TABLE_PREFIX", "no-such-")  # no table was ever created
    reset_settings()
    try:
        with pytest.raises(StorageUnavailable) as failed, make_governor(FakeClock(T0)).permit("tenant-a"):
            pass
    finally:
        reset_settings()  # the next test builds Settings from the restored environment
    status, headers, body = failed.value.render()
    assert (status, failed.value.code, headers["Retry-After"]) == (503, "storage_unavailable", "2")
    assert "no-such-" not in body and "ResourceNotFound" not in body
    assert "no-such-" not in caplog.text
    assert failed.value.__cause__ is None


def test_limits_come_from_the_environment() -> None:
    assert limits_from_env({}) == GovernorLimits(5, 60, 5000, 10_000, 30)
    env = {
        "XPMB_GOVERNOR_CONCURRENT": "3",
        "XPMB_GOVERNOR_PER_MINUTE": "30",
        "XPMB_GOVERNOR_PER_DAY": "1000",  # Xero's Starter tier (xero-reference §2.2)
        "XPMB_GOVERNOR_APP_PER_MINUTE": "9000",
    }
    assert limits_from_env(env) == GovernorLimits(3, 30, 1000, 9000, 30)
    with pytest.raises(ValueError, match="at least 1"):
        GovernorLimits(concurrent=0)
    for bad in ("0", "-1", "ten", "1.5"):
        with pytest.raises(ConfigurationError, match="XPMB_GOVERNOR_PER_DAY"):
            limits_from_env({"XPMB_GOVERNOR_PER_DAY": bad})


def test_governor_for_keeps_one_governor_per_app_and_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XPMB_GOVERNOR_PER_DAY", "1000")
    first = governor_for("app-one")
    assert first is governor_for("app-one")
    assert first is not governor_for("app-two")
    assert first.limits.per_day == 1000
    monkeypatch.setenv("XPMB_GOVERNOR_PER_DAY", "900")
    assert governor_for("app-one").limits.per_day == 900


def test_ids_that_could_alias_another_bucket_are_rejected() -> None:
    with pytest.raises(ValueError, match="#"):
        RateGovernor("app#1", GovernorLimits())
    with pytest.raises(ValueError, match="#"), RateGovernor("app", GovernorLimits()).permit("a#b"):
        pass


# -- property: whatever the sequence, no limit is ever exceeded ---------------------------------

PROPERTY_LIMITS = GovernorLimits(
    concurrent=2, per_minute=3, per_day=4, app_per_minute=5, lease_seconds=30, slot_wait_seconds=0
)
TENANTS = st.sampled_from(["t1", "t2"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("call"), TENANTS),  # acquire and release at once
        st.tuples(st.just("hold"), TENANTS),  # acquire and keep (released later, or never: a crash)
        st.tuples(st.just("release"), st.integers(0, 7)),
        st.tuples(st.just("advance"), st.sampled_from([1, 7, 29.5, 30, 61, 3_600])),
    ),
    max_size=30,
)


@dataclass
class Held:
    context: AbstractContextManager[Permit]
    tenant: str
    lease_until: float


@dataclass
class Oracle:
    """What the governor must decide, computed from the calls it let through."""

    limits: GovernorLimits
    held: list[Held] = field(default_factory=list)
    counts: Counter[tuple[str, ...]] = field(default_factory=Counter)

    def windows(self, tenant: str, now: float) -> list[tuple[tuple[str, ...], int, float]]:
        minute, day = int(now // 60), int(now // DAY)
        return [
            (("day", tenant, str(day)), self.limits.per_day, (day + 1) * DAY),
            (("minute", tenant, str(minute)), self.limits.per_minute, (minute + 1) * 60),
            (("appminute", str(minute)), self.limits.app_per_minute, (minute + 1) * 60),
        ]

    def live(self, tenant: str, now: float) -> int:
        return sum(1 for h in self.held if h.tenant == tenant and h.lease_until > now)

    def expected_refusal(self, tenant: str, now: float) -> tuple[str, int] | None:
        if self.live(tenant, now) >= self.limits.concurrent:
            return ("concurrent", 1)
        for key, limit, resets_at in self.windows(tenant, now):
            if self.counts[key] >= limit:
                return (key[0], max(1, math.ceil(resets_at - now)))
        return None

    def admit(self, tenant: str, now: float) -> None:
        for key, limit, _ in self.windows(tenant, now):
            self.counts[key] += 1
            assert self.counts[key] <= limit


def attempt(governor: RateGovernor, oracle: Oracle, tenant: str, now: float) -> Held | None:
    """Acquire a permit; the governor's answer must be exactly the oracle's."""
    expected = oracle.expected_refusal(tenant, now)
    context = governor.permit(tenant)
    try:
        context.__enter__()
    except XpmRateLimited as refused:
        event(f"refused: {refused.problem}")
        assert (refused.problem, refused.retry_after) == expected
        return None
    assert expected is None
    oracle.admit(tenant, now)
    return Held(context, tenant, now + oracle.limits.lease_seconds)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_no_sequence_of_calls_exceeds_any_limit(tables: str, steps: list[tuple[str, object]]) -> None:
    clock = FakeClock(DAY0 + DAY - 100)  # day and minute boundaries are a few steps away
    governor = make_governor(clock, **vars(PROPERTY_LIMITS))
    oracle = Oracle(PROPERTY_LIMITS)
    for action, argument in steps:
        if action == "advance":
            assert isinstance(argument, float | int)
            clock.advance(argument)
        elif action == "release" and oracle.held:
            assert isinstance(argument, int)
            oracle.held.pop(argument % len(oracle.held)).context.__exit__(None, None, None)
        elif action in ("call", "hold"):
            assert isinstance(argument, str)
            held = attempt(governor, oracle, argument, clock.now)
            if held and action == "hold":
                oracle.held.append(held)
            elif held:
                held.context.__exit__(None, None, None)
        for tenant in ("t1", "t2"):
            assert oracle.live(tenant, clock.now) <= PROPERTY_LIMITS.concurrent


def test_a_burst_waits_briefly_for_a_slot_instead_of_failing(
    tables: str, capsys: pytest.CaptureFixture[str]
) -> None:
    governor = make_governor(FakeClock(T0), concurrent=1, slot_wait_seconds=5)
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with governor.permit("tenant-a"):
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with governor.permit("tenant-a") as permit:  # waits for the holder, then goes ahead
        assert permit.remaining()
    assert time.monotonic() - started >= 0.2
    thread.join()
    waits = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"GovernorWait"' in line]
    assert [(w["service"], w["outcome"]) for w in waits] == [("xpm", "acquired")]
    assert waits[0]["GovernorWait"][0] >= 200


def test_app_leases_never_let_instances_exceed_the_app_minute_budget(tables: str) -> None:
    """Each instance reserves app-minute units in leases of at most 1/100 of what is left (here
    3, then 2, then 1): together they are admitted at most the budget, and lose at most their
    unspent leases (two units each) to over-counting."""
    clock = FakeClock(T0)
    limits = {"per_minute": 1_000, "per_day": 100_000, "app_per_minute": 300, "concurrent": 50}
    instances = [make_governor(clock, app_key="leased-app", **limits) for _ in range(3)]
    admitted, refused = 0, set[int]()
    for turn in range(1_000):
        index = turn % len(instances)
        if index in refused:
            continue
        try:
            call(instances[index], f"tenant-{turn % 7}")
            admitted += 1
        except XpmRateLimited as refusal:
            assert refusal.problem == "appminute"
            refused.add(index)
        if len(refused) == len(instances):
            break
    assert len(refused) == len(instances)
    assert 300 - len(instances) * 2 <= admitted <= 300
    assert stored_calls(instances[0].windows("tenant-0", clock.now)[2]) <= 300
    clock.advance(45)  # a new minute: every instance is admitted again
    for instance in instances:
        call(instance, "tenant-0")
