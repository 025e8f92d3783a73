"""The project's error model and its one problem+json (RFC 9457) rendering.

Codes are the contract (contract.md §4): stable snake_case strings vendors branch on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://xpm-broker.dev/problems/"


@dataclass
class BrokerError(Exception):
    """An error a caller can act on: HTTP status, a stable code, a title and a detail."""

    code: str
    status: int
    title: str
    detail: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail or self.title}"

    def to_problem(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
            "code": self.code,
        }
        if request_id:
            body["request_id"] = request_id
        body.update(self.extra)
        return body

    def render(self, request_id: str | None = None) -> tuple[int, dict[str, str], str]:
        """Status, headers and body of the problem+json response."""
        headers = {"Content-Type": PROBLEM_CONTENT_TYPE, **self.headers}
        return self.status, headers, json.dumps(self.to_problem(request_id))


class ConfigurationError(BrokerError):
    """The deployment is misconfigured (missing env var, unknown stage)."""

    def __init__(self, detail: str) -> None:
        super().__init__("configuration_error", 500, "Service misconfigured", detail)


def internal_error() -> BrokerError:
    return BrokerError(
        "internal_error", 500, "Internal error", "An unexpected error occurred; it has been logged."
    )
