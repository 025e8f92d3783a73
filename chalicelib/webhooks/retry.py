"""When to try again, and what an answer means (security-checklist E3, E4).

The schedule is Standard Webhooks' example: after a failure, wait 5 s, 5 min, 30 min, 2 h, 5 h,
10 h, 14 h, 20 h, then 24 h: ten attempts over about 75.6 hours, each wait scaled by a random
factor in [0.8, 1.2] so endpoints recovering from an outage are not hit by a synchronised wave.
``Retry-After`` on a 429 or 503 lengthens the next wait (never shortens it), up to a day.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from enum import StrEnum

# The wait before attempt k (1-based) of a round; attempt 1 goes immediately.
SCHEDULE: tuple[int, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_ATTEMPTS = len(SCHEDULE)
JITTER = 0.2
RETRY_AFTER_CAP = 86400
RETRY_AFTER_STATUSES = frozenset({429, 503})
NOMINAL_WINDOW_SECONDS = sum(SCHEDULE)  # 272,105 s ≈ 75.6 h


class Verdict(StrEnum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # anything else: 3xx (redirects are not followed), 4xx, 5xx, no answer
    GONE = "gone"  # 410: the vendor asks us to stop; the endpoint is disabled


@dataclass(frozen=True)
class Answer:
    """What happened to one POST: an HTTP status, or an error class when there was no answer."""

    status: int | None
    error: str | None = None  # timeout | connection | tls | dns | blocked | protocol
    retry_after: float | None = None

    @property
    def verdict(self) -> Verdict:
        if self.status is not None and 200 <= self.status < 300:
            return Verdict.DELIVERED
        if self.status == 410:
            return Verdict.GONE
        return Verdict.RETRY


def wait_before(attempt_in_round: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before ``attempt_in_round`` (2..MAX_ATTEMPTS), jittered by ±20 %."""
    base = SCHEDULE[attempt_in_round - 1]
    factor = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return base * factor


def next_wait(attempt_in_round: int, answer: Answer, rng: random.Random | None = None) -> float | None:
    """The wait after a failed ``attempt_in_round``; None when the round is exhausted."""
    if attempt_in_round >= MAX_ATTEMPTS:
        return None
    wait = wait_before(attempt_in_round + 1, rng)
    if answer.retry_after is not None and answer.status in RETRY_AFTER_STATUSES:
        wait = max(wait, min(answer.retry_after, RETRY_AFTER_CAP))
    return wait


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as delay-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
