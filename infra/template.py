"""Build the ``chalice package --merge-template`` document for a stage.

Every table and queue comes from ``chalicelib.resources`` (the same definitions the local
stack's bootstrap and the tests use), so AWS cannot drift from what the code expects.
Run ``python -m infra.template --stage prod > build/infra.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from chalicelib.config import build_settings
from chalicelib.resources import QUEUES, TABLES, QueueDef, TableDef


def logical_id(*parts: str) -> str:
    return "".join(p.capitalize() for part in parts for p in re.split(r"[^A-Za-z0-9]+", part) if p)


def _table(table: TableDef, physical: str, key_ref: dict[str, Any]) -> dict[str, Any]:
    props = table.create_table_kwargs(physical)
    props["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    props["SSESpecification"] = {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_ref}
    if table.ttl_attribute:
        props["TimeToLiveSpecification"] = {"AttributeName": table.ttl_attribute, "Enabled": True}
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain", "Properties": props}


def _queues(queue: QueueDef, name: str, dlq_name: str) -> dict[str, Any]:
    dlq_id = logical_id("queue", queue.dlq_name)
    return {
        dlq_id: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": dlq_name,
                "MessageRetentionPeriod": 1209600,
                "SqsManagedSseEnabled": True,
            },
        },
        logical_id("queue", queue.name): {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": name,
                "VisibilityTimeout": queue.visibility_timeout,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                    "maxReceiveCount": queue.max_receive_count,
                },
            },
        },
    }


def build_merge_template(stage: str) -> dict[str, Any]:
    settings = build_settings(
        {
            "XPMB_STAGE": stage,
            "XPMB_KMS_KEY_ID": f"alias/xpmb-{stage}",
            "XPMB_PUBLIC_URL": "https://names.only",
        }
    )
    key_ref = {"Fn::GetAtt": ["TokenKey", "Arn"]}
    resources: dict[str, Any] = {
        "TokenKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "Properties": {
                "Description": "xpm-broker envelope encryption key",
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AccountAdministers",
                            "Effect": "Allow",
                            "Principal": {
                                "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
                            },
                            "Action": "kms:*",
                            "Resource": "*",
                        }
                    ],
                },
            },
        },
        "TokenKeyAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {"AliasName": settings.kms_key_id, "TargetKeyId": {"Ref": "TokenKey"}},
        },
    }
    for table in TABLES:
        resources[logical_id("table", table.name)] = _table(table, settings.table_name(table.name), key_ref)
    for queue in QUEUES:
        resources.update(_queues(queue, settings.queue_name(queue.name), settings.queue_name(queue.dlq_name)))
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.template")
    parser.add_argument("--stage", default="prod", choices=["dev", "prod"])
    args = parser.parse_args(argv)
    json.dump(build_merge_template(args.stage), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
