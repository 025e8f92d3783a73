"""Exceptions carrying the broker's problem+json (RFC 9457) and its stable ``code``."""

from __future__ import annotations

from typing import Any


class BrokerError(Exception):
    """A 4xx/5xx answer from the broker. ``code`` is the stable machine-readable reason."""

    def __init__(self, status: int, problem: dict[str, Any], request_id: str | None = None) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code") or f"http_{status}")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or "")
        self.request_id = request_id
        super().__init__(f"{status} {self.code}: {self.detail or self.title}")


class RateLimitedError(BrokerError):
    """429: the broker or Xero asks you to wait ``retry_after`` seconds."""

    def __init__(
        self, status: int, problem: dict[str, Any], request_id: str | None, retry_after: float | None
    ) -> None:
        super().__init__(status, problem, request_id)
        self.retry_after = retry_after


class WebhookVerificationError(Exception):
    """The webhook's signature, timestamp or headers did not verify: do not trust the body."""
