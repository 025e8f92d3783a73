"""What each answer means and when the next attempt comes (security-checklist E3, E4)."""

from __future__ import annotations

import random

import pytest

from chalicelib.webhooks.retry import (
    MAX_ATTEMPTS,
    NOMINAL_WINDOW_SECONDS,
    SCHEDULE,
    Answer,
    Verdict,
    next_wait,
    parse_retry_after,
)
from chalicelib.webhooks.signing import body_bytes, signature_headers


def test_the_schedule_is_standard_webhooks_example_over_more_than_three_days() -> None:
    assert SCHEDULE == (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 14 * 3600, 20 * 3600, 24 * 3600)
    assert MAX_ATTEMPTS == 10
    assert 75 * 3600 < NOMINAL_WINDOW_SECONDS < 76 * 3600


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (Answer(200), Verdict.DELIVERED),
        (Answer(202), Verdict.DELIVERED),
        (Answer(204), Verdict.DELIVERED),
        (Answer(299), Verdict.DELIVERED),
        (Answer(301), Verdict.RETRY),  # redirects are failures, never followed
        (Answer(302), Verdict.RETRY),
        (Answer(307), Verdict.RETRY),
        (Answer(400), Verdict.RETRY),
        (Answer(401), Verdict.RETRY),
        (Answer(404), Verdict.RETRY),
        (Answer(410), Verdict.GONE),
        (Answer(429), Verdict.RETRY),
        (Answer(500), Verdict.RETRY),
        (Answer(502), Verdict.RETRY),
        (Answer(None, "timeout"), Verdict.RETRY),
        (Answer(None, "tls"), Verdict.RETRY),
        (Answer(None, "dns"), Verdict.RETRY),
        (Answer(None, "connection"), Verdict.RETRY),
        (Answer(None, "blocked"), Verdict.RETRY),
    ],
)
def test_each_answer_has_one_meaning(answer: Answer, verdict: Verdict) -> None:
    assert answer.verdict is verdict


def test_waits_are_jittered_within_twenty_percent_and_end_after_the_last_attempt() -> None:
    rng = random.Random(1)
    for attempt in range(1, MAX_ATTEMPTS):
        waits = [next_wait(attempt, Answer(500), rng) for _ in range(200)]
        nominal = SCHEDULE[attempt]
        assert all(w is not None and 0.8 * nominal <= w <= 1.2 * nominal for w in waits)
        assert len({round(w or 0, 3) for w in waits}) > 100  # actually random, not a fixed factor
    assert next_wait(MAX_ATTEMPTS, Answer(500), rng) is None


def test_retry_after_lengthens_the_wait_on_429_and_503_only() -> None:
    rng = random.Random(2)
    assert next_wait(1, Answer(429, retry_after=600), rng) == 600
    assert next_wait(1, Answer(503, retry_after=600), rng) == 600
    assert (next_wait(1, Answer(500, retry_after=600), rng) or 0) <= 6
    assert (next_wait(4, Answer(429, retry_after=1), rng) or 0) >= 0.8 * SCHEDULE[4]  # never shorter
    assert next_wait(1, Answer(429, retry_after=10**9), rng) == 86400  # capped at a day


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_900_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Sun, 17 Mar 2030 17:47:40 GMT", now) == pytest.approx(60.0)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_signatures_verify_with_the_official_library_and_cover_the_exact_body() -> None:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    secret, other = (
        "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_" + "ZW5vdWdoIHNlY3JldCBieXRlcyBoZXJl",
    )
    body = body_bytes({"type": "push.completed", "timestamp": "2030-01-01T00:00:00Z", "data": {"é": 1}})
    import time

    headers = signature_headers("evt_1", time.time(), body, [secret, other])
    assert headers["webhook-id"] == "evt_1"
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(secret).verify(body, headers) == Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"1}", b"2}"), headers)
    with pytest.raises(ValueError, match="must not contain"):
        signature_headers("evt.1", time.time(), body, [secret])
