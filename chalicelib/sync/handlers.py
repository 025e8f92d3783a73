"""Lambda entry points of the change feed (wired in app.py): the planner and the SQS worker."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

logger = logging.getLogger("xpmb.sync")

# Stop starting XPM calls with this share of the invocation left, to save the checkpoint.
TIME_MARGIN_SHARE = 0.2
TIME_MARGIN_MIN = 10.0


def _metrics() -> Any:
    from chalicelib.observability import job_metrics

    return job_metrics("sync")


def run_planner(event: Any = None, context: Any = None) -> dict[str, Any]:
    """The schedule: start a sync of every tenant due (``XPMB_SYNC_INTERVAL_HOURS`` apart)."""
    from chalicelib.sync.planner import plan_syncs

    report = plan_syncs()
    metrics = _metrics()
    metrics.add_metric(name="SyncsDue", unit="Count", value=report.due)
    metrics.add_metric(name="SyncsStarted", unit="Count", value=report.started)
    metrics.flush_metrics()
    return {
        "due": report.due,
        "started": report.started,
        "joined": report.joined,
        "enqueued": report.enqueued,
    }


def deadline_of(context: Any) -> float | None:
    """The ``time.monotonic`` after which a run should stop starting calls."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    seconds = float(remaining()) / 1000.0
    return time.monotonic() + seconds - max(TIME_MARGIN_MIN, seconds * TIME_MARGIN_SHARE)


def handle_sync_messages(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS entry point: one run per message; failures reported as partial batch failures."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.sync.jobs import run_message

    outcomes: Counter[str] = Counter()

    def record_handler(record: SQSRecord) -> None:
        try:
            outcome = run_message(json.loads(record.body), deadline_of(context))
        except Exception:
            outcomes["error"] += 1
            raise
        outcomes[outcome.status] += 1

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    result = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    metrics = _metrics()
    for status, value in outcomes.items():
        metrics.add_metric(name=f"Sync{status.capitalize()}", unit="Count", value=value)
    metrics.flush_metrics()
    return dict(result)
