"""bench.fast_moto narrows moto's Query to the queried partition: same answers as moto's own Query."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench import fast_moto


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="connections",
            KeySchema=[
                {"AttributeName": "vendor_id", "KeyType": "HASH"},
                {"AttributeName": "tenant_ref", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "vendor_id", "AttributeType": "S"},
                {"AttributeName": "tenant_ref", "AttributeType": "S"},
                {"AttributeName": "grant_id", "AttributeType": "S"},
                {"AttributeName": "shard", "AttributeType": "N"},
                {"AttributeName": "due", "AttributeType": "N"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by_grant",
                    "KeySchema": [{"AttributeName": "grant_id", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {
                    "IndexName": "by_due",
                    "KeySchema": [
                        {"AttributeName": "shard", "KeyType": "HASH"},
                        {"AttributeName": "due", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                },
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        rng = random.Random(7)
        for n in range(300):
            item: dict[str, Any] = {
                "vendor_id": {"S": f"v{n % 4}"},
                "tenant_ref": {"S": f"t{n:04d}"},
                "status": {"S": rng.choice(["active", "revoked"])},
            }
            if n % 5:  # a sparse index: some items have no grant_id
                item["grant_id"] = {"S": f"g{n % 17}"}
            if n % 3 == 0:
                item["shard"] = {"N": str(n % 2)}
                item["due"] = {"N": str(rng.randint(0, 1000))}
            client.put_item(TableName="connections", Item=item)
        yield client
    fast_moto.uninstall()


QUERIES: list[dict[str, Any]] = [
    {"KeyConditionExpression": "vendor_id = :v", "ExpressionAttributeValues": {":v": {"S": "v1"}}},
    {
        "KeyConditionExpression": "vendor_id = :v AND tenant_ref > :t",
        "ExpressionAttributeValues": {":v": {"S": "v2"}, ":t": {"S": "t0100"}},
        "ScanIndexForward": False,
        "Limit": 7,
    },
    {"KeyConditionExpression": "vendor_id = :v", "ExpressionAttributeValues": {":v": {"S": "nobody"}}},
    {
        "IndexName": "by_grant",
        "KeyConditionExpression": "grant_id = :g",
        "ExpressionAttributeValues": {":g": {"S": "g3"}},
    },
    {
        "IndexName": "by_grant",
        "KeyConditionExpression": "grant_id = :g",
        "FilterExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":g": {"S": "g5"}, ":s": {"S": "active"}},
        "Limit": 3,
    },
    {
        "IndexName": "by_due",
        "KeyConditionExpression": "shard = :s AND due <= :d",
        "ExpressionAttributeValues": {":s": {"N": "1"}, ":d": {"N": "500"}},
        "Limit": 4,
    },
]


def _pages(client: Any, query: dict[str, Any]) -> list[list[dict[str, Any]]]:
    pages, start = [], None
    while True:
        extra = {"ExclusiveStartKey": start} if start else {}
        answer = client.query(TableName="connections", **query, **extra)
        pages.append(answer["Items"])
        start = answer.get("LastEvaluatedKey")
        if not start:
            return pages


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.get("IndexName", "table"))
def test_a_narrowed_query_answers_like_moto(table: Any, query: dict[str, Any]) -> None:
    expected = _pages(table, query)
    fast_moto.install()
    narrowed = _pages(table, query)
    fast_moto.uninstall()
    assert narrowed == expected
    empty_partition = query["ExpressionAttributeValues"].get(":v") == {"S": "nobody"}
    assert any(expected) != empty_partition


def test_a_narrowed_query_does_not_sort_the_whole_table(table: Any) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    compared = 0

    original = DynamoType.__lt__

    def counting(self: Any, other: Any) -> bool:
        nonlocal compared
        compared += 1
        return original(self, other)

    DynamoType.__lt__ = counting  # type: ignore[method-assign]
    try:
        _pages(table, QUERIES[3])
        full = compared
        compared = 0
        fast_moto.install()
        _pages(table, QUERIES[3])
        narrowed = compared
    finally:
        DynamoType.__lt__ = original  # type: ignore[method-assign]
        fast_moto.uninstall()
    assert full >= 299  # moto sorts all 300 items: at least n - 1 comparisons
    assert narrowed < full / 4  # only g3's ~14 items are sorted


def test_sqs_answers_like_moto_with_the_patched_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queue counts, receives (visibility, delay) and retention read the same through the patch."""
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    def journey() -> list[Any]:
        with mock_aws():
            sqs = boto3.client("sqs", region_name="us-east-1")
            url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "600"})["QueueUrl"]
            sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"m{n}"} for n in range(10)]
            )
            sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
            seen: list[Any] = []
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            names.append("ApproximateNumberOfMessagesDelayed")
            seen.append(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"])
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=4, VisibilityTimeout=60)
            seen.append(sorted(m["Body"] for m in got["Messages"]))
            seen.append(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"])
            rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
            seen.append(sorted(m["Body"] for m in rest["Messages"]))
            seen.append(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"])
            return seen

    expected = journey()
    fast_moto.install()
    try:
        patched = journey()
    finally:
        fast_moto.uninstall()
    assert patched == expected
    assert expected[0] == {
        "ApproximateNumberOfMessages": "10",
        "ApproximateNumberOfMessagesNotVisible": "0",
        "ApproximateNumberOfMessagesDelayed": "1",
    }
    assert len(expected[1]) == 4 and len(expected[3]) == 6
