"""Copy items from a point-in-time restored table back into the live table.

DynamoDB restores a table only under a new name, and the stack's IAM policies, alarms and
environment point at the live tables, so a restore ends by copying rows back
(docs/operator.md#restoring-a-table-from-pitr). By default only rows missing from the live
table are copied: a grant's refresh token rotates on every refresh, so overwriting a live grant
with an older copy would bring back a token Xero has already retired.

    python -m infra.restore --source xpmb-prod-grants-restored --target xpmb-prod-grants [--overwrite]
        [--delete-missing] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

BATCH = 25  # BatchWriteItem takes at most 25 requests


@dataclass
class CopyReport:
    scanned: int = 0
    copied: int = 0
    skipped_existing: int = 0
    deleted: int = 0


def _items(client: Any, table: str, projection: list[str] | None = None) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    if projection:
        kwargs["ProjectionExpression"] = ", ".join(f"#k{i}" for i in range(len(projection)))
        kwargs["ExpressionAttributeNames"] = {f"#k{i}": name for i, name in enumerate(projection)}
    for page in client.get_paginator("scan").paginate(**kwargs):
        yield from page.get("Items", [])


def _key_names(client: Any, table: str) -> list[str]:
    schema = client.describe_table(TableName=table)["Table"]["KeySchema"]
    return [k["AttributeName"] for k in schema]


def _key(item: dict[str, Any], names: list[str]) -> str:
    return json.dumps({n: item[n] for n in names}, sort_keys=True)


def _write(client: Any, table: str, requests: list[dict[str, Any]]) -> None:
    for start in range(0, len(requests), BATCH):
        pending = {table: requests[start : start + BATCH]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def copy_back(
    client: Any,
    source: str,
    target: str,
    *,
    overwrite: bool = False,
    delete_missing: bool = False,
    dry_run: bool = False,
) -> CopyReport:
    """Put the source's rows into the target (missing ones only unless ``overwrite``)."""
    names = _key_names(client, target)
    if names != _key_names(client, source):
        raise SystemExit(f"{source} and {target} have different keys")
    existing = {_key(item, names) for item in _items(client, target, names)}
    report = CopyReport()
    puts: list[dict[str, Any]] = []
    source_keys: set[str] = set()
    for item in _items(client, source):
        report.scanned += 1
        key = _key(item, names)
        source_keys.add(key)
        if key in existing and not overwrite:
            report.skipped_existing += 1
            continue
        puts.append({"PutRequest": {"Item": item}})
    report.copied = len(puts)
    deletes = []
    if delete_missing:
        deletes = [{"DeleteRequest": {"Key": json.loads(k)}} for k in sorted(existing - source_keys)]
        report.deleted = len(deletes)
    if not dry_run:
        _write(client, target, puts + deletes)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.restore", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="the restored table")
    parser.add_argument("--target", required=True, help="the live table")
    parser.add_argument("--overwrite", action="store_true", help="also replace rows the live table has")
    parser.add_argument("--delete-missing", action="store_true", help="delete live rows the source lacks")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    import boto3

    report = copy_back(
        boto3.client("dynamodb"),
        args.source,
        args.target,
        overwrite=args.overwrite,
        delete_missing=args.delete_missing,
        dry_run=args.dry_run,
    )
    json.dump({**asdict(report), "dry_run": args.dry_run}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
