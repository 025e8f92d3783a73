"""The bootstrap creates every resource from chalicelib.resources, idempotently, over real HTTP."""

from __future__ import annotations

import json

import boto3

from chalicelib.config import get_settings
from chalicelib.resources import QUEUES, TABLES
from xpmb.bootstrap import bootstrap


def test_bootstrap_creates_everything_then_changes_nothing(local_aws: str) -> None:
    settings = get_settings()
    first = bootstrap(settings)
    assert len(first.created) == len(TABLES) + 1 + 2 * len(QUEUES)
    assert first.existing == []

    dynamodb = boto3.client("dynamodb", endpoint_url=local_aws)
    tables = set(dynamodb.list_tables()["TableNames"])
    assert {settings.table_name(t.name) for t in TABLES} <= tables
    for table in TABLES:
        described = dynamodb.describe_table(TableName=settings.table_name(table.name))["Table"]
        assert described["KeySchema"][0]["AttributeName"] == table.hash_key.name
        assert {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])} == {
            i.name for i in table.indexes
        }
        if table.ttl_attribute:
            ttl = dynamodb.describe_time_to_live(TableName=settings.table_name(table.name))
            assert ttl["TimeToLiveDescription"]["AttributeName"] == table.ttl_attribute

    sqs = boto3.client("sqs", endpoint_url=local_aws)
    for queue in QUEUES:
        url = sqs.get_queue_url(QueueName=settings.queue_name(queue.name))["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(settings.queue_name(queue.dlq_name))
        assert attrs["VisibilityTimeout"] == str(queue.visibility_timeout)

    kms = boto3.client("kms", endpoint_url=local_aws)
    key = kms.describe_key(KeyId=settings.kms_key_id)["KeyMetadata"]
    assert key["KeyUsage"] == "ENCRYPT_DECRYPT"

    second = bootstrap(settings)
    assert second.created == []
    assert len(second.existing) == len(first.created)
