"""The rate governor: Xero's limits enforced before an XPM call leaves (security-checklist B10).

Xero limits each app per tenant to 5 calls in progress, 60 a minute and 5,000 a day, and each app
to 10,000 a minute across tenants (xero-reference §2.1). Many Lambda instances share those
budgets, so the state lives in the ``rate_limits`` table and every admission is decided by
conditional writes (``ADD`` under a condition, or a lease under a condition): no instance reads
a count and then writes it back.

Layout (hash key ``bucket``; ``app`` is the Xero client id, ``tenant`` the Xero tenant id)::

    t#{app}#{tenant}#c#{i}       concurrency slot i < concurrent: lease_id, lease_until
    t#{app}#{tenant}#d#{day}     calls in the UTC day (day = floor(now / 86400)); tenant blocks
    t#{app}#{tenant}#m#{minute}  calls in the minute (minute = floor(now / 60))
    a#{app}#m#{minute}           the app's calls in the minute, all tenants; app blocks

A permit takes a slot, then counts the call in the day, tenant-minute and app-minute windows, in
that order, each with ``ADD calls 1`` under ``calls < limit``. A refusal gives back what the call
took: the slot is released and earlier counters get ``ADD calls -1``. Refunds are best effort; one
lost to a crash over-counts, which errs on the safe side and ends with the window.

Windows are fixed: the epoch minute and the UTC day. Xero's fixed windows start at other,
per-tenant times (§2.1); ``Permit.observe`` and ``Permit.upstream_limited`` close that gap.
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
    lease_id = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    blocked_until = NumberAttribute(null=True)
    block_problem = UnicodeAttribute(null=True)
    expires_at_ttl = TTLAttribute(null=True)


@dataclass(frozen=True)
class Window:
    """One fixed window of one budget: the item counting it, its limit, and when it resets."""

    problem: str  # the X-Rate-Limit-Problem name of this limit
    key: str
    limit: int
    resets_at: int


@dataclass(frozen=True)
class _Lease:
    key: str
    lease_id: str


class Permit:
    """One XPM call the governor let through; ``counted`` maps bucket keys to calls after it."""

    def __init__(self, governor: RateGovernor, tenant_id: str, at: float, counted: dict[str, int]) -> None:
        self._governor = governor
        self._tenant_id = tenant_id
        self._at = at
        self._counted = counted

    def remaining(self) -> dict[str, str]:
        """The broker's own view of the tenant's budget after this call, as vendor headers."""
        day, minute, _ = self._governor.windows(self._tenant_id, self._at)
        return {
            "X-RateLimit-Minute-Remaining": str(max(0, minute.limit - self._counted.get(minute.key, 0))),
            "X-RateLimit-Day-Remaining": str(max(0, day.limit - self._counted.get(day.key, 0))),
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
        tenant, minute_ends = f"t#{self.app_key}#{tenant_id}", (minute + 1) * MINUTE
        limits = self.limits
        return (
            Window("day", f"{tenant}#d#{day}", limits.per_day, (day + 1) * DAY),
            Window("minute", f"{tenant}#m#{minute}", limits.per_minute, minute_ends),
            Window("appminute", f"a#{self.app_key}#m#{minute}", limits.app_per_minute, minute_ends),
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
        deadline = time.monotonic() + self.limits.slot_wait_seconds
        delay = 0.02
        while True:
            lease = self._try_slots(tenant_id, lease_id, now)
            if lease is not None:
                return lease
            if time.monotonic() + delay > deadline:
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
        """Count the call in each window, or refund what was counted and raise the refusal."""
        counted: dict[str, int] = {}
        try:
            for window in self.windows(tenant_id, now):
                calls = _conditional_update(
                    window.key,
                    [RateBucket.calls.add(1), RateBucket.expires_at_ttl.set(_window_ttl(window))],
                    _has_room(window.limit, now),
                )
                if calls is None:
                    raise self._refusal(window, now)
                counted[window.key] = calls
        except BaseException:
            _refund(list(counted))
            raise
        return counted

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
        window = self.windows("-", now)[2]
        calls = _conditional_update(
            window.key,
            [RateBucket.calls.add(1), RateBucket.expires_at_ttl.set(_window_ttl(window))],
            _has_room(window.limit, now),
        )
        if calls is None:
            raise self._refusal(window, now)

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
            if used > counted.get(window.key, 0):
                _conditional_update(
                    window.key,
                    [RateBucket.calls.set(used), RateBucket.expires_at_ttl.set(_window_ttl(window))],
                    RateBucket.calls.does_not_exist() | (RateBucket.calls < used),
                )
                counted[window.key] = used

    def block(self, tenant_id: str, retry_after: int | None, problem: str | None) -> None:
        """Refuse the tenant (the whole app for ``appminute``) until now + ``retry_after``.

        The block is stored on the window items every permit already writes under a condition
        (tenant: its day items; app: its app-minute items), so honouring it costs no extra call.
        A block only ever grows: a shorter Retry-After never cuts a longer one.
        """
        now = self._clock()
        name = _problem_name(problem)
        until = now + self._block_seconds(name, retry_after, now)
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


def _refund(keys: list[str]) -> None:
    """Give back counted calls; a failure only over-counts (safe), so it is logged, not raised."""
    for key in keys:
        try:
            RateBucket(key).update(actions=[RateBucket.calls.add(-1)])
        except PynamoDBException as error:
            logger.warning("rate governor refund lost (%s)", _cause(error))


def _has_room(limit: int, now: float) -> Any:
    not_full = RateBucket.calls.does_not_exist() | (RateBucket.calls < limit)
    not_blocked = RateBucket.blocked_until.does_not_exist() | (RateBucket.blocked_until <= now)
    return not_full & not_blocked


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
