"""Fault injection: the next N calls to a target misbehave in a chosen way.

Targets name a group of endpoints: ``token`` (any grant), ``token.refresh``,
``token.authorization_code``, ``revocation``, ``connections``, ``xpm`` (any XPM call),
``xpm.read``, ``xpm.write`` (add/update/archive/delete/relationships), or an XPM method such as
``xpm.client.add``. The most specific armed rule wins.

Kinds:
- ``server_error``: answer ``status`` (default 503) without doing anything.
- ``timeout``: sleep ``seconds`` (default 30) before doing anything (the caller times out).
- ``invalid_grant``: the token endpoint answers 400 ``{"error": "invalid_grant"}``.
- ``drop_response``: do the work (rotate the token, create the client), then drop the TCP
  connection without answering: "Xero accepted the refresh but the response was lost".
- ``rate_limit``: answer 429 with ``X-Rate-Limit-Problem: problem`` (default ``minute``) and
  ``Retry-After: retry_after`` (default 60).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

KINDS = ("server_error", "timeout", "invalid_grant", "drop_response", "rate_limit")


@dataclass
class Fault:
    target: str
    kind: str
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "remaining": self.remaining, **self.params}


class FaultRegistry:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def arm(self, target: str, kind: str, count: int = 1, **params: Any) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = Fault(target, kind, count, params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, *targets: str) -> Fault | None:
        """Consume one shot of the first armed fault matching ``targets`` (most specific first)."""
        with self._lock:
            for target in targets:
                for fault in self._faults:
                    if fault.target == target and fault.remaining > 0:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                        return fault
        return None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
