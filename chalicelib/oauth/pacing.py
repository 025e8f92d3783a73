"""Pacing of scheduled refreshes: the rotation rate and the governor's app budget (issue 5).

A rotation makes two Xero calls: the refresh at identity's token endpoint, and a tenantless
``GET /connections`` (is the connection still there? §1.8). Xero documents limits for its APIs,
not for identity (xero-reference §2.1); ``/connections`` counts in the app-wide minute (10,000 a
minute, ``X-AppMinLimit-Remaining``, §1.8). So, per Xero app (its client id), and shared by every
worker instance through the ``rate_limits`` table:

1. the rotation rate, ``Settings.rotation_per_minute`` (``XPMB_ROTATION_PER_MINUTE``, default 600)
   spread evenly over one-second slots (``Pace``), each refresh taking its slot by a conditional
   ``ADD``. Any 60 seconds then see at most the rate plus one, wherever Xero's minute starts
   (its windows start at other times than ours, §2.1): a backlog never lands as a burst. The
   default leaves most of the app minute to the XPM proxy and is gentle on identity;
2. the governor's app-minute budget (``chalicelib/xpm/governor.py``), which XPM calls share:
   one call counted per rotation, so rotations and proxy traffic together stay under it.

A worker waits for a slot until its deadline (what its Lambda has left), then defers: SQS
delivers the message again later and the grant stays due meanwhile.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pynamodb.exceptions import PynamoDBException

from chalicelib.storage import StorageUnavailable, is_conditional_failure, ttl_at
from chalicelib.tenants.models import Vendor
from chalicelib.xpm.errors import XpmRateLimited
from chalicelib.xpm.governor import RateBucket, governor_for

_CLEANUP_GRACE = 3_600  # TTL tidies slot items an hour after their slot; nothing reads TTL (D6)
_VENDOR_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class Pace:
    """``per_minute`` spread over one-second slots: slot ``i`` allows the refreshes that bring the
    running total to ``floor((i + 1) * per_minute / 60)``. So 342 a minute is 5 or 6 a second, 30
    a minute one every other second, and any 60 consecutive slots allow at most ``per_minute + 1``."""

    per_minute: int

    def allowance(self, slot: int) -> int:
        return (slot + 1) * self.per_minute // 60 - slot * self.per_minute // 60


class PacingDeferred(Exception):
    """No slot before the deadline: leave the grant to a later delivery (it stays due)."""


def pace_refresh(
    app_key: str,
    deadline: float,
    *,
    per_minute: int | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Wait for the app's next refresh slot, then count the call in its app minute.

    ``deadline`` is on ``time.monotonic()``. Returns the seconds waited; raises PacingDeferred.
    """
    from chalicelib.config import get_settings

    pace = Pace(per_minute or get_settings().rotation_per_minute)
    waited = 0.0
    while not _take_slot(app_key, pace, clock()):
        now = clock()
        until_next = math.floor(now) + 1 - now
        # Jitter: the workers that found a slot full do not all come back at the same instant.
        waited += _wait(until_next + random.uniform(0, 0.1), deadline, sleep)  # noqa: S311
    governor = governor_for(app_key)
    while True:
        try:
            governor.count_app_call()
            return waited
        except XpmRateLimited as limited:
            waited += _wait(limited.retry_after + random.uniform(0, 1), deadline, sleep)  # noqa: S311


def _take_slot(app_key: str, pace: Pace, now: float) -> bool:
    slot = math.floor(now)
    allowed = pace.allowance(slot)
    if allowed < 1:
        return False
    item = RateBucket(f"r#{app_key}#{slot}")
    try:
        item.update(
            actions=[
                RateBucket.calls.add(1),
                RateBucket.expires_at_ttl.set(ttl_at(slot + 1 + _CLEANUP_GRACE)),
            ],
            condition=RateBucket.calls.does_not_exist() | (RateBucket.calls < allowed),
        )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return False
        raise StorageUnavailable() from exc
    return True


def _wait(seconds: float, deadline: float, sleep: Callable[[float], None]) -> float:
    if time.monotonic() + seconds > deadline:
        raise PacingDeferred(f"no refresh slot within the time left ({seconds:.1f} s needed)")
    sleep(seconds)
    return seconds


_vendors: dict[str, tuple[Vendor, float]] = {}
_vendors_lock = threading.Lock()


def cached_vendor(vendor_id: str) -> Vendor:
    """The vendor as read at most a few minutes ago: its Xero client id (the app the limits
    belong to) and whether its app was flagged misconfigured. Never used for the secret."""
    from chalicelib.tenants.vendors import get_vendor

    with _vendors_lock:
        cached = _vendors.get(vendor_id)
    if cached is not None and time.monotonic() - cached[1] < _VENDOR_CACHE_SECONDS:
        return cached[0]
    vendor = get_vendor(vendor_id)
    with _vendors_lock:
        _vendors[vendor_id] = (vendor, time.monotonic())
    return vendor


def forget_vendor(vendor_id: str) -> None:
    with _vendors_lock:
        _vendors.pop(vendor_id, None)
