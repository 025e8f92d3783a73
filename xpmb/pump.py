"""The local stand-in for EventBridge schedules and SQS event-source mappings.

Chalice's local server serves HTTP only, and moto never triggers Lambda (stack-notes.md §1.5,
§3.2). The pump reads the app's declared event sources and drives the very same handlers:
it long-polls each SQS queue and invokes the handler with a Lambda-shaped event (deleting only
the messages the handler did not report in ``batchItemFailures``), and fires each schedule on
its period (capped locally so an hourly job runs every minute).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib.aws import aws_client as client
from chalicelib.config import Settings

logger = logging.getLogger("xpmb.pump")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class SqsSource:
    handler: str
    queue: str
    batch_size: int


@dataclass
class ScheduleSource:
    handler: str
    period: float
    next_run: float = 0.0


class FakeLambdaContext:
    """Enough of the Lambda context object for Chalice and Powertools."""

    def __init__(self, function_name: str, timeout_seconds: float = 60.0) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def schedule_period(expression: Any) -> float:
    """Seconds between runs of a Chalice schedule (cron expressions count as hourly)."""
    text = expression if isinstance(expression, str) else expression.to_string()
    match = _RATE.match(text)
    if match:
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]
    return 3600.0


def discover(app: Any) -> tuple[list[SqsSource], list[ScheduleSource]]:
    sqs_sources: list[SqsSource] = []
    schedules: list[ScheduleSource] = []
    for source in app.event_sources:
        kind = type(source).__name__
        if kind == "SQSEventConfig" and source.queue:
            sqs_sources.append(SqsSource(source.name, source.queue, source.batch_size))
        elif kind == "ScheduledEventConfig":
            schedules.append(ScheduleSource(source.name, schedule_period(source.schedule_expression)))
    return sqs_sources, schedules


class Pump:
    def __init__(
        self,
        app: Any,
        settings: Settings,
        schedule_cap_seconds: float | None = 60.0,
        wait_seconds: int = 1,
    ) -> None:
        self.app = app
        self.settings = settings
        self.wait_seconds = wait_seconds
        self.sqs_sources, self.schedules = discover(app)
        if schedule_cap_seconds is not None:
            for schedule in self.schedules:
                schedule.period = min(schedule.period, schedule_cap_seconds)
        now = time.monotonic()
        for schedule in self.schedules:
            schedule.next_run = now + schedule.period
        self._sqs = client("sqs", settings)
        self._queue_urls: dict[str, str] = {}
        self.delivered = 0

    # -- SQS ---------------------------------------------------------------------------
    def _queue_url(self, queue: str) -> str:
        if queue not in self._queue_urls:
            self._queue_urls[queue] = self._sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        return self._queue_urls[queue]

    def deliver_sqs_once(self, wait_seconds: int | None = None) -> int:
        """One receive per queue; returns how many messages the handlers processed."""
        handled = 0
        for source in self.sqs_sources:
            handled += self._deliver(source, self.wait_seconds if wait_seconds is None else wait_seconds)
        return handled

    def _deliver(self, source: SqsSource, wait_seconds: int) -> int:
        url = self._queue_url(source.queue)
        messages = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, source.batch_size),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        arn = f"arn:aws:sqs:{self.settings.aws_region}:123456789012:{source.queue}"
        event = {"Records": [_sqs_record(m, arn, self.settings.aws_region) for m in messages]}
        try:
            result = self.app.handler_map[source.handler](event, FakeLambdaContext(source.handler))
        except Exception:
            # The whole batch failed: leave every message for redelivery (and, eventually, the DLQ).
            logger.exception(
                "SQS handler %s failed; %d message(s) will be retried", source.handler, len(messages)
            )
            return 0
        failed = (
            {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            if isinstance(result, dict)
            else set()
        )
        done = [m for m in messages if m["MessageId"] not in failed]
        for message in done:
            self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        self.delivered += len(done)
        return len(done)

    # -- schedules ---------------------------------------------------------------------
    def fire_due_schedules(self, now: float | None = None, *, force: bool = False) -> list[str]:
        """Invoke every schedule whose time has come (all of them with ``force``)."""
        now = time.monotonic() if now is None else now
        fired: list[str] = []
        for schedule in self.schedules:
            if force or now >= schedule.next_run:
                schedule.next_run = now + schedule.period
                self._fire(schedule)
                fired.append(schedule.handler)
        return fired

    def _fire(self, schedule: ScheduleSource) -> None:
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.settings.aws_region,
            "resources": [f"arn:aws:events:{self.settings.aws_region}:123456789012:rule/{schedule.handler}"],
            "detail": {},
        }
        try:
            self.app.handler_map[schedule.handler](event, FakeLambdaContext(schedule.handler))
        except Exception:
            logger.exception("scheduled handler %s failed", schedule.handler)

    # -- loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.fire_due_schedules()
            if self.sqs_sources:
                self.deliver_sqs_once()
            else:
                stop.wait(self.wait_seconds)


def _sqs_record(message: dict[str, Any], arn: str, region: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def main() -> int:
    """``python -m xpmb.pump``: drive the app's schedules and queues until SIGTERM/SIGINT."""
    import os
    import signal

    from chalicelib.config import get_settings

    logging.basicConfig(level=logging.INFO, format="pump: %(message)s")
    from app import app

    cap = float(os.environ.get("XPMB_PUMP_SCHEDULE_SECONDS", "60"))
    pump = Pump(app, get_settings(), schedule_cap_seconds=cap)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logger.info("driving %d queue(s) and %d schedule(s)", len(pump.sqs_sources), len(pump.schedules))
    pump.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
