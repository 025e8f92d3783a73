"""``xpm-broker connections rotate``: the planner's selection, rotated in-process (no queue)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

TERMINAL = {"needs_reauthorisation": "invalid_grant", "app_misconfigured": "invalid_client"}


@dataclass
class RotateSummary:
    selected: int = 0
    dry_run: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "dry_run": self.dry_run,
            "outcomes": dict(self.outcomes),
            "failed": dict(self.failed),
            "seconds": round(self.seconds, 2),
        }

    def lines(self) -> list[str]:
        verb = "would rotate" if self.dry_run else "selected"
        lines = [f"{verb} {self.selected} grant(s) in {self.seconds:.1f}s"]
        lines += [f"  {name:<24} {count}" for name, count in sorted(self.outcomes.items())]
        lines += [f"  failed: {name:<16} {count}" for name, count in sorted(self.failed.items())]
        return lines


def select_grants(due_only: bool, now: float) -> list[str]:
    from chalicelib.oauth.models import Grant
    from chalicelib.oauth.rotation import plan_rotation

    if due_only:
        return plan_rotation(now, enqueue=False).grant_ids
    # --all is an operator's explicit full pass: a Scan is acceptable here, never in the planner.
    return [g.grant_id for g in Grant.scan(Grant.status == "active")]


# An operator waits at the terminal: a grant may wait this long for its pacing slot, and a new
# pair may be retried this long when DynamoDB refuses it (checklist D3).
GRANT_SECONDS = 60.0


def rotate_now(*, due_only: bool = True, dry_run: bool = False, out: TextIO | None = None) -> RotateSummary:
    from chalicelib.oauth.refresh import persistence_budget
    from chalicelib.oauth.rotation import failure_class, publish_counts, rotate_grant
    from chalicelib.oauth.xero_clock import xero_now

    stream = out or sys.stderr
    started = time.monotonic()
    now = xero_now()
    grant_ids = select_grants(due_only, now)
    summary = RotateSummary(selected=len(grant_ids), dry_run=dry_run)
    if dry_run:
        summary.seconds = time.monotonic() - started
        return summary
    counts: Counter[str] = Counter()
    for done, grant_id in enumerate(grant_ids, start=1):
        try:
            with persistence_budget(GRANT_SECONDS):
                outcome = rotate_grant(
                    grant_id, force=not due_only, deadline=time.monotonic() + GRANT_SECONDS
                )
            counts[outcome.value] += 1
            if outcome.value in TERMINAL:
                summary.failed[TERMINAL[outcome.value]] += 1
            else:
                summary.outcomes[outcome.value] += 1
        except Exception as exc:  # reported by class; the grant stays due for the next run
            summary.failed[failure_class(exc)] += 1
            counts[f"failed.{failure_class(exc)}"] += 1
        _progress(stream, done, len(grant_ids))
    if grant_ids:
        stream.write("\n")
    if _metrics_wanted():
        publish_counts(counts)
    summary.seconds = time.monotonic() - started
    return summary


def _progress(stream: TextIO, done: int, total: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    stream.flush()


def _metrics_wanted() -> bool:
    import os

    return os.environ.get("XPMB_CLI_METRICS", "").lower() in {"1", "true", "yes"}
