"""Create every table, the KMS key and the queues from chalicelib.resources (idempotent).

Used by the local stack on every start and by tests; infra/ declares the same resources for
AWS from the same definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib.aws import aws_client as client
from chalicelib.config import Settings
from chalicelib.resources import QUEUES, TABLES


@dataclass
class BootstrapReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    def add(self, name: str, created: bool) -> None:
        (self.created if created else self.existing).append(name)


def bootstrap(settings: Settings) -> BootstrapReport:
    report = BootstrapReport()
    _create_tables(settings, report)
    _create_key(settings, report)
    _create_queues(settings, report)
    return report


def _create_tables(settings: Settings, report: BootstrapReport) -> None:
    dynamodb = client("dynamodb", settings)
    existing = set(_all_table_names(dynamodb))
    for table in TABLES:
        name = settings.table_name(table.name)
        if name in existing:
            report.add(f"table {name}", created=False)
            continue
        dynamodb.create_table(**table.create_table_kwargs(name))
        dynamodb.get_waiter("table_exists").wait(TableName=name)
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        report.add(f"table {name}", created=True)


def _all_table_names(dynamodb: Any) -> list[str]:
    names: list[str] = []
    for page in dynamodb.get_paginator("list_tables").paginate():
        names.extend(page["TableNames"])
    return names


def _create_key(settings: Settings, report: BootstrapReport) -> None:
    alias = settings.kms_key_id
    if not alias.startswith("alias/"):
        report.add(f"kms {alias}", created=False)  # an ARN or key id is managed elsewhere
        return
    kms = client("kms", settings)
    aliases = {a["AliasName"] for p in kms.get_paginator("list_aliases").paginate() for a in p["Aliases"]}
    if alias in aliases:
        report.add(f"kms {alias}", created=False)
        return
    key_id = kms.create_key(Description="xpm-broker token envelope key", KeyUsage="ENCRYPT_DECRYPT")[
        "KeyMetadata"
    ]["KeyId"]
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    report.add(f"kms {alias}", created=True)


def _create_queues(settings: Settings, report: BootstrapReport) -> None:
    sqs = client("sqs", settings)
    existing = set()
    for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=settings.queue_prefix):
        existing.update(url.rsplit("/", 1)[-1] for url in page.get("QueueUrls", []))
    for queue in QUEUES:
        dlq_name = settings.queue_name(queue.dlq_name)
        name = settings.queue_name(queue.name)
        if dlq_name not in existing:
            sqs.create_queue(QueueName=dlq_name, Attributes={"MessageRetentionPeriod": "1209600"})
        report.add(f"queue {dlq_name}", created=dlq_name not in existing)
        if name in existing:
            report.add(f"queue {name}", created=False)
            continue
        dlq_url = sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes = {
            "VisibilityTimeout": str(queue.visibility_timeout),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)}
            ),
            **queue.attributes,
        }
        sqs.create_queue(QueueName=name, Attributes=attributes)
        report.add(f"queue {name}", created=True)
