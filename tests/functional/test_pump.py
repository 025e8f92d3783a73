"""The pump drives a Chalice app's SQS and schedule handlers against local AWS (moto server)."""

from __future__ import annotations

import json
from typing import Any

import boto3
from chalice import Chalice, Rate

from chalicelib.config import get_settings
from xpmb.bootstrap import bootstrap
from xpmb.pump import Pump, discover, schedule_period


def _app(seen: list[Any], ticks: list[str]) -> Chalice:
    app = Chalice(app_name="pump-under-test")

    @app.on_sqs_message(queue="xpmb-local-pushes", batch_size=10)
    def consume(event: Any) -> dict[str, Any]:
        failures = []
        for record in event:
            body = json.loads(record.body)
            if body.get("fail"):
                failures.append({"itemIdentifier": record.to_dict()["messageId"]})
            else:
                seen.append(body)
        return {"batchItemFailures": failures}

    @app.schedule(Rate(1, unit=Rate.HOURS))
    def hourly(event: Any) -> None:
        ticks.append(event.detail_type)

    return app


def test_schedule_periods_come_from_the_expression() -> None:
    assert schedule_period(Rate(5, unit=Rate.MINUTES)) == 300
    assert schedule_period("rate(1 day)") == 86400
    assert schedule_period("cron(0 12 * * ? *)") == 3600


def test_discovers_the_event_sources_chalice_declares() -> None:
    sqs_sources, schedules = discover(_app([], []))
    assert [(s.handler, s.queue, s.batch_size) for s in sqs_sources] == [("consume", "xpmb-local-pushes", 10)]
    assert [(s.handler, s.period) for s in schedules] == [("hourly", 3600)]


def test_delivers_messages_and_keeps_only_reported_failures(local_aws: str) -> None:
    settings = get_settings()
    bootstrap(settings)
    seen: list[Any] = []
    pump = Pump(_app(seen, []), settings, wait_seconds=0)
    sqs = boto3.client("sqs", endpoint_url=local_aws)
    url = sqs.get_queue_url(QueueName="xpmb-local-pushes")["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"fail": True}))

    handled = 0
    for _ in range(5):
        handled += pump.deliver_sqs_once()
    assert handled == 3
    assert sorted(b["n"] for b in seen) == [0, 1, 2]
    # The failed record was not deleted: it is in flight and returns after the visibility timeout.
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_a_crashing_handler_leaves_the_whole_batch_for_redelivery(local_aws: str) -> None:
    settings = get_settings()
    bootstrap(settings)
    app = Chalice(app_name="crashing")

    @app.on_sqs_message(queue="xpmb-local-pushes")
    def consume(event: Any) -> None:
        raise RuntimeError("boom")

    pump = Pump(app, settings, wait_seconds=0)
    sqs = boto3.client("sqs", endpoint_url=local_aws)
    url = sqs.get_queue_url(QueueName="xpmb-local-pushes")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    assert pump.deliver_sqs_once() == 0
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_fires_schedules_when_due_with_a_local_cap(local_aws: str) -> None:
    ticks: list[str] = []
    pump = Pump(_app([], ticks), get_settings(), schedule_cap_seconds=60)
    (schedule,) = pump.schedules
    assert schedule.period == 60
    assert pump.fire_due_schedules(now=schedule.next_run - 1) == []
    assert pump.fire_due_schedules(now=schedule.next_run) == ["hourly"]
    assert ticks == ["Scheduled Event"]
    assert pump.fire_due_schedules(force=True) == ["hourly"]
    assert len(ticks) == 2
