"""The rate governor: Xero's limits enforced before an XPM call leaves (security-checklist B10).

Xero limits each app per tenant to 5 calls in progress, 60 a minute and 5,000 a day, and each app
to 10,000 a minute across tenants (xero-reference §2.1). Many Lambda instances share those
budgets, so the state lives in the ``rate_limits`` table and every admission is decided by
conditional writes (``ADD`` under a condition, or a lease under a condition): no instance reads
a count and then writes it back.

Layout (hash key ``bucket``; ``app`` is the Xero client id, ``tenant`` the Xero tenant id)::

    t#{app}#{tenant}#c#{i}       concurrency slot i < concurrent: lease_id, lease_until
    t#{app}#{tenant}#d#{day}     the tenant's windows: ``calls`` in the UTC day (day = floor(now /
                                 86400)) and ``minute_calls`` in minute ``minute`` (floor(now /
                                 60)) of that day; tenant blocks
    a#{app}#m#{minute}           the app's calls in the minute, all tenants; app blocks

A permit takes a slot (one conditional write), then counts the call in the tenant's day and minute
with one conditional write on the day item (``ADD calls 1, minute_calls 1`` under both limits and
no block; a new minute restarts ``minute_calls`` in the same write), then takes one unit of the
app-minute budget. The app budget is shared by every tenant, so each instance reserves it in small
leases (``ADD calls n`` under ``calls <= limit - n``) and spends them locally: ``n`` is at most
1/100 of what the window has left and at most ``APP_LEASE_MAX``, so it is 1 near the limit and for
small limits (the budget is exact there) and at most ``APP_LEASE_MAX - 1`` units per instance go
unused when a window ends (over-counting: the safe side). A permit therefore costs three writes
(slot, tenant windows, release) and one app write per lease. A refusal gives back what the call
took: the slot is released, a counted tenant call is refunded. Refunds are best effort; one lost to
a crash over-counts, which errs on the safe side and ends with the window.

Windows are fixed: the epoch minute and the UTC day. Xero's fixed windows start at other,
per-tenant times (§2.1); ``Permit.observe`` and ``Permit.upstream_limited`` close that gap (both
also drop this instance's app lease, so a tightened or blocked app budget is obeyed at once here;
other instances obey an app block once their lease, at most ``APP_LEASE_MAX - 1`` calls, is spent).
Every expiry is a stored timestamp compared in a condition; ``expires_at_ttl`` only tidies up
(security-checklist D6).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib.errors import ConfigurationError
from chalicelib.storage import BrokerModel, StorageUnavailable, is_conditional_failure, ttl_at
from chalicelib.xpm.errors import DEFAULT_RETRY_AFTER, XpmRateLimited

logger = logging.getLogger("xpmb.xpm")

MINUTE = 60
DAY = 86_400
PROBLEMS = ("minute", "day", "appminute", "concurrent")
# Items outlive their last use by an hour before TTL may delete them; nothing reads TTL (D6).
_CLEANUP_GRACE = 3_600
# An app-wide block is written to each app-minute window it covers; Xero's app window is one
# minute, so a longer Retry-After is unexpected: cap the fan-out (a 429 after it re-blocks).
_MAX_BLOCK_WINDOWS = 10
# App-minute leases (see the module docstring): at most this many units per reservation, and at
# most 1/APP_LEASE_SHARE of what the window had left when last seen.
APP_LEASE_MAX = 20
APP_LEASE_SHARE = 100
_MEMORY_LIMIT = 4096  # entries of per-instance memory (minutes seen, leases) before a reset
_XERO_REMAINING = {
    "day": "x-daylimit-remaining",
    "minute": "x-minlimit-remaining",
    "appminute": "x-appminlimit-remaining",
}
_ENV = {
    "concurrent": "XPMB_GOVERNOR_CONCURRENT",
    "per_minute": "XPMB_GOVERNOR_PER_MINUTE",
    "per_day": "XPMB_GOVERNOR_PER_DAY",
    "app_per_minute": "XPMB_GOVERNOR_APP_PER_MINUTE",
}


@dataclass(frozen=True)
class GovernorLimits:
    """Xero's limits per app per tenant, and per app (xero-reference §2.1).

    ``per_day`` may be set lower than 5,000: Xero's Starter tier allows 1,000 calls a day per
    organisation (§2.2), and a deployment may keep headroom for another integration.
    ``lease_seconds`` must exceed the longest XPM call (API Gateway stops at 29 s): a holder
    still running when its lease ends loses its slot to the next caller.
    """

    concurrent: int = 5
    per_minute: int = 60
    per_day: int = 5000
    app_per_minute: int = 10_000
    lease_seconds: int = 30
    # A burst above ``concurrent`` waits this long for a slot before 429 ``concurrent``: the
    # calls are short, so queueing briefly serves a burst (e.g. 50 typeahead searches) whole.
    slot_wait_seconds: float = 10.0

    def __post_init__(self) -> None:
        if min(self.concurrent, self.per_minute, self.per_day, self.app_per_minute, self.lease_seconds) < 1:
            raise ValueError("governor limits must all be at least 1")
        if self.slot_wait_seconds < 0:
            raise ValueError("slot_wait_seconds must not be negative")


def limits_from_env(env: Mapping[str, str] | None = None) -> GovernorLimits:
    """Limits from ``XPMB_GOVERNOR_*`` (default ``os.environ``); unset variables keep Xero's."""
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, variable in _ENV.items():
        raw = source.get(variable, "").strip()
        if raw:
            values[name] = _positive_int(variable, raw)
    wait = source.get("XPMB_GOVERNOR_SLOT_WAIT_SECONDS", "").strip()
    if wait:
        try:
            values["slot_wait_seconds"] = max(0.0, float(wait))
        except ValueError as exc:
            raise ConfigurationError(
                f"XPMB_GOVERNOR_SLOT_WAIT_SECONDS must be a number, not {wait!r}"
            ) from exc
    return GovernorLimits(**values)


def _positive_int(variable: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{variable} must be a positive integer, not {raw!r}")
    return int(raw)


class RateBucket(BrokerModel):
    """One slot, one window counter, or both a counter and a block (see the module docstring)."""

    logical_table = "rate_limits"

    bucket = UnicodeAttribute(hash_key=True)
    calls = NumberAttribute(null=True)
    minute = NumberAttribute(null=True)  # day items: the minute ``minute_calls`` counts
    minute_calls = NumberAttribute(null=True)
    lease_id = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    blocked_until = NumberAttribute(null=True)
    block_problem = UnicodeAttribute(null=True)
    expires_at_ttl = TTLAttribute(null=True)


@dataclass(frozen=True)
class Window:
    """One fixed window of one budget: the item counting it, its limit, and when it resets."""

    problem: str  # the X-Rate-Limit-Problem name of this limit
    key: str  # the item counting it
    limit: int
    resets_at: int
    attribute: str = "calls"  # the item's attribute holding the count
    index: int = 0  # the window's number (epoch minute or day)


@dataclass(frozen=True)
class _Lease:
    key: str
    lease_id: str


class Permit:
    """One XPM call the governor let through; ``counted`` maps each window's problem name
    (``day``, ``minute``, ``appminute``) to the calls stored after it."""

    def __init__(self, governor: RateGovernor, tenant_id: str, at: float, counted: dict[str, int]) -> None:
        self._governor = governor
        self._tenant_id = tenant_id
        self._at = at
        self._counted = counted

    def remaining(self) -> dict[str, str]:
        """The broker's own view of the tenant's budget after this call, as vendor headers."""
        day, minute, _ = self._governor.windows(self._tenant_id, self._at)
        return {
            "X-RateLimit-Minute-Remaining": str(max(0, minute.limit - self._counted.get("minute", 0))),
            "X-RateLimit-Day-Remaining": str(max(0, day.limit - self._counted.get("day", 0))),
        }

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take Xero's ``X-*Limit-Remaining`` headers; tighten our counters where Xero has less."""
        self._governor.tighten(self._tenant_id, headers, self._counted)

    def upstream_limited(self, retry_after: int | None, problem: str | None) -> None:
        """Xero answered 429: refuse the tenant (or the app) in every instance until it clears."""
        self._governor.block(self._tenant_id, retry_after, problem)


class RateGovernor:
    """Xero's budgets for one app (``app_key``, its client id), shared by every instance."""

    def __init__(self, app_key: str, limits: GovernorLimits, clock: Callable[[], float] = time.time) -> None:
        _check_key_part(app_key)
        self.app_key = app_key
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        # Per instance, only ever an optimisation or a reservation already stored:
        self._minutes: dict[str, int] = {}  # day item key -> the minute it last counted
        self._app_leases: dict[str, int] = {}  # app-minute key -> reserved units not yet spent
        self._app_seen: dict[str, int] = {}  # app-minute key -> its stored calls when last written

    @contextmanager
    def permit(self, tenant_id: str) -> Iterator[Permit]:
        """Hold one of the tenant's slots and count the call, or raise 429 ``rate_limited``.

        The slot is released on exit, also when the call raised.
        """
        _check_key_part(tenant_id)
        now = self._clock()
        lease = self._take_slot(tenant_id, now)
        try:
            yield Permit(self, tenant_id, now, self._count_call(tenant_id, now))
        finally:
            self._release(lease)

    def windows(self, tenant_id: str, now: float) -> tuple[Window, Window, Window]:
        """The day, tenant-minute and app-minute windows at ``now``, in the order they are counted.

        The day comes first because tenant blocks live on its item: a blocked tenant is refused
        before it touches a minute budget.
        """
        minute, day = int(now // MINUTE), int(now // DAY)
        day_key, minute_ends = f"t#{self.app_key}#{tenant_id}#d#{day}", (minute + 1) * MINUTE
        limits = self.limits
        return (
            Window("day", day_key, limits.per_day, (day + 1) * DAY, "calls", day),
            # The tenant's minute is counted on its day item, in the same write as the day.
            Window("minute", day_key, limits.per_minute, minute_ends, "minute_calls", minute),
            Window(
                "appminute",
                f"a#{self.app_key}#m#{minute}",
                limits.app_per_minute,
                minute_ends,
                "calls",
                minute,
            ),
        )

    # -- concurrency slots ------------------------------------------------------------------

    def _take_slot(self, tenant_id: str, now: float) -> _Lease:
        """Lease a free slot among ``concurrent`` slot items, or raise ``concurrent``.

        Each slot is its own item taken by a conditional write, so at most ``concurrent`` leases
        are live whatever the races; a crashed holder's slot is free once its stored
        ``lease_until`` has passed (instances' clocks differ by far less than a lease). Starting
        at a random slot spreads simultaneous callers. One item per slot rather than one item
        holding a map of leases: a map needs read, prune expired, write under a version, and
        under contention most writers lose and retry; a slot write needs no read.
        """
        lease_id = secrets.token_hex(8)
        started = time.monotonic()
        deadline = started + self.limits.slot_wait_seconds
        delay = 0.02
        while True:
            lease = self._try_slots(tenant_id, lease_id, now)
            if lease is not None:
                if delay > 0.02:  # it had to wait for a slot: worth a data point
                    _record_wait(time.monotonic() - started, "acquired")
                return lease
            if time.monotonic() + delay > deadline:
                _record_wait(time.monotonic() - started, "gave_up")
                # The concurrent limit clears when any call in flight ends (xpm/errors.py).
                raise XpmRateLimited(DEFAULT_RETRY_AFTER, "concurrent")
            time.sleep(delay + random.uniform(0, delay))  # noqa: S311 - jitter, not security
            delay = min(delay * 2, 0.25)
            now = self._clock()

    def _try_slots(self, tenant_id: str, lease_id: str, now: float) -> _Lease | None:
        count = self.limits.concurrent
        start = secrets.randbelow(count)
        lease_until = now + self.limits.lease_seconds
        for offset in range(count):
            key = f"t#{self.app_key}#{tenant_id}#c#{(start + offset) % count}"
            taken = _conditional_update(
                key,
                [
                    RateBucket.lease_id.set(lease_id),
                    RateBucket.lease_until.set(lease_until),
                    RateBucket.expires_at_ttl.set(ttl_at(lease_until + _CLEANUP_GRACE)),
                ],
                RateBucket.lease_until.does_not_exist() | (RateBucket.lease_until <= now),
            )
            if taken is not None:
                return _Lease(key, lease_id)
        return None

    def _release(self, lease: _Lease) -> None:
        """Free the slot if it is still ours; never raise (the lease expiry is the backstop)."""
        try:
            RateBucket(lease.key).update(
                actions=[RateBucket.lease_id.remove(), RateBucket.lease_until.remove()],
                condition=RateBucket.lease_id == lease.lease_id,
            )
        except PynamoDBException as error:
            # Failing here must not turn a finished XPM call (maybe a create) into an error.
            reason = "lease taken over" if is_conditional_failure(error) else _cause(error)
            logger.warning("rate governor slot not released (%s)", reason)

    # -- window budgets ---------------------------------------------------------------------

    def _count_call(self, tenant_id: str, now: float) -> dict[str, int]:
        """Count the call in the tenant's day and minute, then the app's minute; or refund the
        tenant's count and raise the refusal."""
        day, minute, app = self.windows(tenant_id, now)
        counted = self._count_tenant(day, minute, now)
        try:
            counted["appminute"] = self._take_app_unit(app, now)
        except BaseException:
            _refund_tenant(day, minute)
            raise
        return counted

    def _count_tenant(self, day: Window, minute: Window, now: float) -> dict[str, int]:
        """One conditional write on the day item counts the day and the minute (or refuses).

        The minute is either the one the item already counts (``ADD minute_calls 1`` under the
        limit) or a later one (``SET minute_calls = 1``): two shapes of write, tried in the order
        this instance last saw, so a new minute costs one extra write at most.
        """
        day_room = RateBucket.calls.does_not_exist() | (RateBucket.calls < day.limit)
        not_blocked = RateBucket.blocked_until.does_not_exist() | (RateBucket.blocked_until <= now)
        ttl = RateBucket.expires_at_ttl.set(_window_ttl(day))
        same_minute: tuple[list[Any], Any] = (
            [RateBucket.calls.add(1), RateBucket.minute_calls.add(1), ttl],
            (RateBucket.minute == minute.index) & (RateBucket.minute_calls < minute.limit),
        )
        new_minute: tuple[list[Any], Any] = (
            [
                RateBucket.calls.add(1),
                RateBucket.minute.set(minute.index),
                RateBucket.minute_calls.set(1),
                ttl,
            ],
            RateBucket.minute.does_not_exist() | (RateBucket.minute < minute.index),
        )
        seen = self._minutes.get(day.key)
        for actions, minute_room in (
            (same_minute, new_minute) if seen == minute.index else (new_minute, same_minute)
        ):
            item = RateBucket(day.key)
            try:
                item.update(actions=actions, condition=day_room & not_blocked & minute_room)
            except PynamoDBException as error:
                if is_conditional_failure(error):
                    continue
                raise _unavailable(error) from None
            self._remember(self._minutes, day.key, minute.index)
            return {"day": int(item.calls or 0), "minute": int(item.minute_calls or 0)}
        raise self._tenant_refusal(day, minute, now)

    def _tenant_refusal(self, day: Window, minute: Window, now: float) -> XpmRateLimited:
        """Why the day item refused: the day (exhausted or blocked) first, then the minute."""
        item = _read(day.key)
        reasons: list[tuple[float, str]] = []
        if item is not None and (item.calls or 0) >= day.limit:
            reasons.append((day.resets_at, day.problem))
        if item is not None and item.blocked_until is not None and item.blocked_until > now:
            reasons.append((item.blocked_until, item.block_problem or day.problem))
        minute_full = (
            item is not None and item.minute == minute.index and (item.minute_calls or 0) >= minute.limit
        )
        if not reasons and minute_full:
            reasons.append((minute.resets_at, minute.problem))
        if not reasons:
            # A refund landed between our write and this read (or another instance's clock
            # counts a later minute): room again shortly.
            return XpmRateLimited(DEFAULT_RETRY_AFTER, minute.problem)
        until, problem = max(reasons)
        return XpmRateLimited(_seconds_until(until, now), problem)

    def _take_app_unit(self, app: Window, now: float) -> int:
        """One unit of the app-minute budget: from this instance's lease, or a new lease."""
        with self._lock:
            left = self._app_leases.get(app.key, 0)
            if left > 0:
                self._app_leases[app.key] = left - 1
                return self._app_seen.get(app.key, 0)
            seen = self._app_seen.get(app.key)
        remaining = app.limit - (seen or 0)
        size = max(1, min(APP_LEASE_MAX, remaining // APP_LEASE_SHARE))
        not_blocked = RateBucket.blocked_until.does_not_exist() | (RateBucket.blocked_until <= now)
        for units in (size, 1) if size > 1 else (1,):
            room = RateBucket.calls.does_not_exist() | (RateBucket.calls <= app.limit - units)
            calls = _conditional_update(
                app.key,
                [RateBucket.calls.add(units), RateBucket.expires_at_ttl.set(_window_ttl(app))],
                room & not_blocked,
            )
            if calls is not None:
                with self._lock:
                    if app.key not in self._app_leases and len(self._app_leases) >= 2:
                        self._app_leases.clear()  # leases of past minutes are worth nothing
                    self._app_leases[app.key] = self._app_leases.get(app.key, 0) + units - 1
                    self._remember(self._app_seen, app.key, calls)
                return calls
        raise self._refusal(app, now)

    def _drop_app_lease(self, app: Window) -> None:
        """Forget this instance's unspent app units (they stay counted: the safe side)."""
        with self._lock:
            self._app_leases.pop(app.key, None)
            self._app_seen.pop(app.key, None)

    def _remember(self, memory: dict[str, int], key: str, value: int) -> None:
        if len(memory) >= _MEMORY_LIMIT and key not in memory:
            memory.clear()
        memory[key] = value

    def _refusal(self, window: Window, now: float) -> XpmRateLimited:
        """Why ``window`` refused (exhausted, blocked, or both): the later reset wins."""
        item = _read(window.key)
        reasons: list[tuple[float, str]] = []
        if item is not None and (item.calls or 0) >= window.limit:
            reasons.append((window.resets_at, window.problem))
        if item is not None and item.blocked_until is not None and item.blocked_until > now:
            reasons.append((item.blocked_until, item.block_problem or window.problem))
        if not reasons:
            # Another call's refund landed between our write and this read: room again shortly.
            return XpmRateLimited(DEFAULT_RETRY_AFTER, window.problem)
        until, problem = max(reasons)
        return XpmRateLimited(_seconds_until(until, now), problem)

    def count_app_call(self) -> None:
        """Count one tenantless call (``GET /connections``, §1.8) in the app-minute window only,
        or raise 429 ``appminute`` (window full, or blocked after Xero's 429). Additive, for the
        rotation worker (oauth/pacing.py): no tenant slot or tenant window is involved."""
        now = self._clock()
        self._take_app_unit(self.windows("-", now)[2], now)

    # -- what Xero says ---------------------------------------------------------------------

    def tighten(self, tenant_id: str, headers: Mapping[str, str], counted: dict[str, int]) -> None:
        """Raise our counts to what Xero's ``X-*Limit-Remaining`` headers imply (never lower them).

        Xero counts calls we never saw (the same Xero app used outside the broker) and its fixed
        windows start at other times than ours (§2.1), so its ``remaining`` can be below ours.
        The current window becomes ``calls >= limit - remaining``; calls in flight that Xero has
        not yet counted can still slip through, and their 429 then blocks via upstream_limited.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        for window in self.windows(tenant_id, self._clock()):
            remaining = _parse_count(lowered.get(_XERO_REMAINING[window.problem]))
            if remaining is None:
                continue
            used = window.limit - min(remaining, window.limit)
            if used <= counted.get(window.problem, 0):
                continue
            ttl = RateBucket.expires_at_ttl.set(_window_ttl(window))
            if window.problem == "minute":
                # The minute lives on the day item: raise it if it counts this minute, or
                # start this minute at ``used`` if it counts an earlier one.
                raised = _conditional_update(
                    window.key,
                    [RateBucket.minute_calls.set(used), ttl],
                    (RateBucket.minute == window.index) & (RateBucket.minute_calls < used),
                )
                if raised is None:
                    _conditional_update(
                        window.key,
                        [RateBucket.minute.set(window.index), RateBucket.minute_calls.set(used), ttl],
                        RateBucket.minute.does_not_exist() | (RateBucket.minute < window.index),
                    )
            else:
                attribute = RateBucket.calls
                _conditional_update(
                    window.key,
                    [attribute.set(used), ttl],
                    attribute.does_not_exist() | (attribute < used),
                )
            if window.problem == "appminute":
                self._drop_app_lease(window)  # Xero has counted less room than we reserved
            counted[window.problem] = used

    def block(self, tenant_id: str, retry_after: int | None, problem: str | None) -> None:
        """Refuse the tenant (the whole app for ``appminute``) until now + ``retry_after``.

        The block is stored on the window items every permit already writes under a condition
        (tenant: its day items; app: its app-minute items), so honouring it costs no extra call.
        A block only ever grows: a shorter Retry-After never cuts a longer one.
        """
        now = self._clock()
        name = _problem_name(problem)
        until = now + self._block_seconds(name, retry_after, now)
        if name == "appminute":
            self._drop_app_lease(self.windows(tenant_id, now)[2])
        for window in self._covering(tenant_id, name, now, until):
            _conditional_update(
                window.key,
                [
                    RateBucket.blocked_until.set(until),
                    RateBucket.block_problem.set(name),
                    RateBucket.expires_at_ttl.set(_window_ttl(window)),
                ],
                RateBucket.blocked_until.does_not_exist() | (RateBucket.blocked_until < until),
            )

    def _block_seconds(self, problem: str, retry_after: int | None, now: float) -> float:
        if retry_after is not None:
            return min(max(1, retry_after), DAY)
        # Xero sends Retry-After for the minute and day limits (§2.1); these cover its absence.
        if problem == "concurrent":
            return DEFAULT_RETRY_AFTER
        if problem == "day":
            return (now // DAY + 1) * DAY - now
        return MINUTE

    def _covering(self, tenant_id: str, problem: str, now: float, until: float) -> list[Window]:
        """The windows overlapping [now, until) whose items carry the block."""
        index = 2 if problem == "appminute" else 0
        windows: list[Window] = []
        at = now
        while at < until and len(windows) < _MAX_BLOCK_WINDOWS:
            window = self.windows(tenant_id, at)[index]
            windows.append(window)
            at = window.resets_at
        return windows


def governor_for(app_key: str) -> RateGovernor:
    """The process's governor for one Xero app, with limits from the environment.

    Keyed by the limits too (reading four variables costs microseconds), so a changed
    environment (the Chalice test client sets env per request) gets a governor that obeys it.
    """
    return _cached_governor(app_key, limits_from_env())


@lru_cache(maxsize=64)
def _cached_governor(app_key: str, limits: GovernorLimits) -> RateGovernor:
    return RateGovernor(app_key, limits)


# -- DynamoDB calls: each is one request; AWS errors become StorageUnavailable (503) ---------


def _conditional_update(key: str, actions: list[Any], condition: Any) -> int | None:
    """One conditional UpdateItem; the item's ``calls`` after it (0 if none), or None if refused."""
    item = RateBucket(key)
    try:
        item.update(actions=actions, condition=condition)
    except PynamoDBException as error:
        if is_conditional_failure(error):
            return None
        raise _unavailable(error) from None
    return int(item.calls or 0)


def _read(key: str) -> RateBucket | None:
    try:
        return RateBucket.get(key, consistent_read=True)
    except DoesNotExist:
        return None
    except PynamoDBException as error:
        raise _unavailable(error) from None


def _refund_tenant(day: Window, minute: Window) -> None:
    """Give back a counted tenant call; a failure only over-counts (safe): logged, not raised."""
    try:
        try:
            RateBucket(day.key).update(
                actions=[RateBucket.calls.add(-1), RateBucket.minute_calls.add(-1)],
                condition=RateBucket.minute == minute.index,
            )
        except PynamoDBException as error:
            if not is_conditional_failure(error):
                raise
            # The item counts a later minute by now: only the day is ours to give back.
            RateBucket(day.key).update(actions=[RateBucket.calls.add(-1)])
    except PynamoDBException as error:
        logger.warning("rate governor refund lost (%s)", _cause(error))


def _unavailable(error: PynamoDBException) -> StorageUnavailable:
    # botocore's text names tables and endpoints: our log gets the code, the caller a 503.
    logger.warning("rate governor storage unavailable: %s", _cause(error))
    return StorageUnavailable()


def _cause(error: PynamoDBException) -> str:
    return error.cause_response_code or type(error.cause or error).__name__


# -- small pure helpers ----------------------------------------------------------------------


def _window_ttl(window: Window) -> Any:
    return ttl_at(window.resets_at + _CLEANUP_GRACE)


def _seconds_until(until: float, now: float) -> int:
    return max(1, math.ceil(until - now))


def _parse_count(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _problem_name(problem: str | None) -> str:
    """Xero's X-Rate-Limit-Problem as one of PROBLEMS.

    Only ``minute`` and ``day`` are confirmed spellings (§2.1), so ``AppMinute``/``app-minute``
    read as ``appminute``; an unknown or missing value is taken as the tenant's minute limit.
    """
    name = re.sub("[^a-z]", "", (problem or "").lower())
    return name if name in PROBLEMS else "minute"


def _check_key_part(value: str) -> None:
    # "#" separates the parts of a bucket key; one inside an id could alias another tenant's.
    if not value or "#" in value:
        raise ValueError("app and tenant ids must be non-empty and contain no '#'")


def _record_wait(seconds: float, outcome: str) -> None:
    """How long a call waited for a concurrency slot (issue 7 metric ``GovernorWait``)."""
    from chalicelib.observability import record_metric

    record_metric("GovernorWait", round(seconds * 1000, 3), "Milliseconds", service="xpm", outcome=outcome)
