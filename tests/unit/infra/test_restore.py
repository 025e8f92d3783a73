"""Copying a PITR-restored table back into the live one (docs/operator.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.resources import table_def
from infra.restore import copy_back


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for name in ("live", "restored"):
            client.create_table(**table_def("connections").create_table_kwargs(name))
        yield client


def _put(client: Any, table: str, tenant: str, status: str) -> None:
    item = {
        "vendor_id": {"S": "v_1"},
        "tenant_ref": {"S": tenant},
        "grant_id": {"S": "g"},
        "status": {"S": status},
    }
    client.put_item(TableName=table, Item=item)


def _rows(client: Any, table: str) -> dict[str, str]:
    items = client.scan(TableName=table)["Items"]
    return {i["tenant_ref"]["S"]: i["status"]["S"] for i in items}


def test_copies_only_missing_rows_by_default(dynamodb: Any) -> None:
    _put(dynamodb, "restored", "firm-1", "active")
    _put(dynamodb, "restored", "firm-2", "active")
    _put(dynamodb, "live", "firm-2", "revoked")  # changed since the restore point: kept
    _put(dynamodb, "live", "firm-3", "active")
    report = copy_back(dynamodb, "restored", "live")
    assert (report.scanned, report.copied, report.skipped_existing, report.deleted) == (2, 1, 1, 0)
    assert _rows(dynamodb, "live") == {"firm-1": "active", "firm-2": "revoked", "firm-3": "active"}


def test_overwrite_and_delete_missing_make_the_live_table_the_restored_one(dynamodb: Any) -> None:
    for n in range(30):  # more than one BatchWriteItem
        _put(dynamodb, "restored", f"firm-{n}", "active")
    _put(dynamodb, "live", "firm-0", "revoked")
    _put(dynamodb, "live", "stray", "active")
    assert copy_back(dynamodb, "restored", "live", dry_run=True, overwrite=True).copied == 30
    assert _rows(dynamodb, "live") == {"firm-0": "revoked", "stray": "active"}
    report = copy_back(dynamodb, "restored", "live", overwrite=True, delete_missing=True)
    assert (report.copied, report.deleted) == (30, 1)
    assert _rows(dynamodb, "live") == {f"firm-{n}": "active" for n in range(30)}
