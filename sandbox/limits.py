"""Xero's API rate limits (xero-reference.md §2.1), enforced on the sandbox clock.

Per (app, tenant): ``concurrent`` calls in progress, ``per_minute`` and ``per_day`` calls; per app:
``app_per_minute`` calls across all tenants. Windows are fixed and, as Xero says, reset at different
times per tenant: each key's window is shifted by a stable offset derived from the key, so a client
must obey ``Retry-After`` rather than assume windows start on the minute.

A rejected call consumes no budget. The limiter lives in ``state.extra`` so ``state.reset()``
forgets all windows, and reads ``state.config.limits`` on every call so ``PUT /_sandbox/limits``
applies at once.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import Counter
from dataclasses import dataclass

from sandbox.state import Limits, SandboxState

MINUTE = 60
DAY = 86_400
_EXTRA_KEY = "xpm_rate_limiter"


@dataclass(frozen=True)
class Admission:
    """A call let through, with what is left of each budget afterwards."""

    client_id: str
    tenant_id: str
    minute_remaining: int
    day_remaining: int
    app_minute_remaining: int

    def headers(self) -> dict[str, str]:
        return {
            "X-MinLimit-Remaining": str(self.minute_remaining),
            "X-DayLimit-Remaining": str(self.day_remaining),
            "X-AppMinLimit-Remaining": str(self.app_minute_remaining),
        }


@dataclass(frozen=True)
class Rejection:
    """A 429: ``problem`` is the X-Rate-Limit-Problem value; ``retry_after`` seconds or None.

    ``minute`` and ``day`` are the observed values; ``concurrent`` and ``appminute`` are this
    sandbox's guess (UNVERIFIED, §8.6). Xero documents Retry-After for minute and day breaches;
    the app-minute window resets just the same, so it gets one too.
    """

    problem: str
    retry_after: int | None

    def headers(self) -> dict[str, str]:
        headers = {"X-Rate-Limit-Problem": self.problem}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (scope, key) -> (window index, calls counted in that window)
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}
        self._in_flight: Counter[str] = Counter()

    def admit(self, limits: Limits, client_id: str, tenant_id: str, now: float) -> Admission | Rejection:
        """Count one call for (app, tenant) or say which limit it breaks.

        Checked longest wait first (day, minute, app minute), so a caller that honours
        Retry-After is not bounced by the next limit straight away; then concurrency.
        """
        pair = f"{client_id}/{tenant_id}"
        budgets = (
            ("day", "day", pair, DAY, limits.per_day),
            ("minute", "minute", pair, MINUTE, limits.per_minute),
            ("appminute", "app", client_id, MINUTE, limits.app_per_minute),
        )
        with self._lock:
            used: list[tuple[tuple[str, str], int, int]] = []
            for problem, scope, key, period, limit in budgets:
                index, window_end = _window(key, period, now)
                seen_index, count = self._windows.get((scope, key), (index, 0))
                count = count if seen_index == index else 0
                if count >= limit:
                    return Rejection(problem, max(1, math.ceil(window_end - now)))
                used.append(((scope, key), index, count + 1))
            if self._in_flight[pair] >= limits.concurrent:
                return Rejection("concurrent", None)
            for slot, index, count in used:
                self._windows[slot] = (index, count)
            self._in_flight[pair] += 1
            day, minute, app = (count for _, _, count in used)
            return Admission(
                client_id,
                tenant_id,
                minute_remaining=max(0, limits.per_minute - minute),
                day_remaining=max(0, limits.per_day - day),
                app_minute_remaining=max(0, limits.app_per_minute - app),
            )

    def count_app_call(self, limits: Limits, client_id: str, now: float) -> int:
        """Count a tenantless call (``/connections``) in the app-wide minute; the budget left."""
        index, _ = _window(client_id, MINUTE, now)
        with self._lock:
            seen_index, count = self._windows.get(("app", client_id), (index, 0))
            count = (count if seen_index == index else 0) + 1
            self._windows[("app", client_id)] = (index, count)
        return max(0, limits.app_per_minute - count)

    def admit_app_call(self, limits: Limits, client_id: str, now: float) -> int | Rejection:
        """Count a tenantless call in the app-wide minute, or refuse it when that minute is spent
        (Xero's app limit covers every call of the app, §2.1). The budget left, or a Rejection."""
        index, window_end = _window(client_id, MINUTE, now)
        with self._lock:
            seen_index, count = self._windows.get(("app", client_id), (index, 0))
            count = count if seen_index == index else 0
            if count >= limits.app_per_minute:
                return Rejection("appminute", max(1, math.ceil(window_end - now)))
            self._windows[("app", client_id)] = (index, count + 1)
        return max(0, limits.app_per_minute - count - 1)

    def release(self, admission: Admission) -> None:
        """The admitted call has finished: it no longer counts against ``concurrent``."""
        pair = f"{admission.client_id}/{admission.tenant_id}"
        with self._lock:
            if self._in_flight[pair] > 0:
                self._in_flight[pair] -= 1


def _window(key: str, period: int, now: float) -> tuple[int, float]:
    """The fixed window holding ``now`` for ``key``: its index and when it ends.

    Shifted by a stable per-key offset because Xero's windows "reset at different times per
    tenant" (§2.1). crc32, not hash(): the offset must not change between runs.
    """
    offset = zlib.crc32(key.encode()) % period
    index = math.floor((now - offset) / period)
    return index, (index + 1) * period + offset


def rate_limiter(state: SandboxState) -> RateLimiter:
    """The state's limiter, created on first use (and forgotten by ``state.reset()``)."""
    with state.lock:
        limiter = state.extra.get(_EXTRA_KEY)
        if not isinstance(limiter, RateLimiter):
            limiter = RateLimiter()
            state.extra[_EXTRA_KEY] = limiter
        return limiter
