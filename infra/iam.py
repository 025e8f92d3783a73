"""Least-privilege IAM: one declaration per Lambda function, one policy file each.

Chalice gives every function its own role when ``autogen_policy`` is false and the function has
an ``iam_policy_file`` (``.chalice/config.json`` → ``lambda_functions``). The files are generated
from ``FUNCTIONS`` below and name tables, indexes, queues and the key by their CloudFormation
logical ids (``infra.template``), so a policy always points at the resources of its own stack.
The policy files therefore work with ``chalice package --merge-template`` (``make package``),
which is how the broker is deployed; ``chalice deploy`` is not supported.

Adding a handler is one entry in ``FUNCTIONS`` and then ``python -m infra.iam --write``
(tests/unit/infra checks that every handler on ``app.app`` has an entry and that the committed
files are current).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chalicelib.resources import queue_def, table_def

PROJECT_DIR = Path(__file__).resolve().parents[1]
CHALICE_DIR = PROJECT_DIR / ".chalice"
POLICY_DIR = "policies"  # under .chalice/, where Chalice resolves ``iam_policy_file``

TABLE_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem")
TABLE_WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")
INDEX_QUERY = ("dynamodb:Query",)
QUEUE_SEND = ("sqs:GetQueueUrl", "sqs:SendMessage")  # SendMessageBatch is authorised as SendMessage
# What the Lambda event source mapping needs, plus ChangeMessageVisibility for early retries.
QUEUE_CONSUME = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
)
KMS_DECRYPT = ("kms:Decrypt",)
KMS_ENCRYPT = ("kms:GenerateDataKey", "kms:Decrypt")
LOGS = ("logs:CreateLogStream", "logs:PutLogEvents")  # the template creates the log group
# crypto.record_context puts this pair in every encryption context.
KMS_CONTEXT = {"kms:EncryptionContext:app": "xpm-broker"}

Access = Literal["read", "write"]


@dataclass(frozen=True)
class Needs:
    """What one function may touch, by the logical names of ``chalicelib.resources``.

    ``tables``: table → ``read`` (GetItem, BatchGetItem, Query, ConditionCheckItem) or ``write``
    (read + PutItem, UpdateItem, DeleteItem, BatchWriteItem; transactions are authorised per
    item with these). ``indexes``: ``table/index`` pairs the function queries. ``sends``: queues
    it sends to. ``consumes``: the queue of its SQS event source. ``kms``: ``decrypt`` or
    ``encrypt`` (GenerateDataKey + Decrypt) on the broker's key, only with the broker's
    encryption context.
    """

    tables: Mapping[str, Access]
    indexes: tuple[str, ...] = ()
    sends: tuple[str, ...] = ()
    consumes: str | None = None
    kms: Literal["", "decrypt", "encrypt"] = ""


# Every Lambda function of app.app: the API handler, each schedule and each SQS consumer.
FUNCTIONS: dict[str, Needs] = {
    "api_handler": Needs(
        tables={
            "vendors": "write",
            "webhook_attempts": "read",
            "vendor_keys": "read",
            "grants": "write",
            "connections": "write",
            "connect_sessions": "write",
            "oauth_states": "write",
            "request_nonces": "write",
            "audit": "write",
            "events": "write",
            "idempotency": "write",
            "rate_limits": "write",
            "pushes": "write",
            "syncs": "write",
            "client_snapshots": "read",
        },
        indexes=("connections/by_grant", "client_snapshots/by_updated"),
        sends=("pushes", "webhooks", "token_rescue", "sync"),
        kms="encrypt",
    ),
    "push_worker": Needs(
        tables={
            "vendors": "read",
            "grants": "write",
            "connections": "write",
            "audit": "write",
            "events": "write",
            "rate_limits": "write",
            "pushes": "write",
        },
        indexes=("connections/by_grant",),
        sends=("webhooks", "token_rescue"),
        consumes="pushes",
        kms="encrypt",
    ),
    "rotation_planner": Needs(
        tables={"grants": "write", "connections": "read", "events": "write"},
        indexes=("grants/by_next_rotation", "connections/by_grant"),
        sends=("rotation", "webhooks"),
    ),
    "rotation_worker": Needs(
        tables={
            "vendors": "write",
            "grants": "write",
            "connections": "write",
            "audit": "write",
            "events": "write",
            "rate_limits": "write",
        },
        indexes=("connections/by_grant",),
        sends=("webhooks", "token_rescue"),
        consumes="rotation",
        kms="encrypt",
    ),
    "token_rescue_worker": Needs(
        tables={"grants": "write"},
        consumes="token_rescue",
        kms="encrypt",
    ),
    "sync_planner": Needs(
        tables={"syncs": "write"},
        indexes=("syncs/by_next_sync",),
        sends=("sync",),
    ),
    "sync_worker": Needs(
        tables={
            "vendors": "read",
            "syncs": "write",
            "client_snapshots": "write",
            "events": "write",
            "rate_limits": "write",
            "grants": "write",
            "connections": "write",
            "audit": "write",
        },
        indexes=("connections/by_grant", "client_snapshots/by_updated"),
        sends=("sync", "webhooks", "token_rescue"),
        consumes="sync",
        kms="encrypt",
    ),
    "webhook_dispatcher": Needs(
        tables={"events": "write"},
        indexes=("events/by_dispatch",),
        sends=("webhooks",),
    ),
    "webhook_worker": Needs(
        tables={"vendors": "write", "events": "write", "webhook_attempts": "write", "audit": "write"},
        sends=("webhooks",),
        consumes="webhooks",
        kms="decrypt",
    ),
}


def logical_id(*parts: str) -> str:
    """A CloudFormation logical id from words: ``("table", "vendor_keys")`` → ``TableVendorKeys``."""
    return "".join(p.capitalize() for part in parts for p in re.split(r"[^A-Za-z0-9]+", part) if p)


def table_id(table: str) -> str:
    return logical_id("table", table_def(table).name)


def queue_id(queue: str) -> str:
    return logical_id("queue", queue_def(queue).name)


def function_id(function: str) -> str:
    """Chalice's logical id of a function (``chalice.utils.to_cfn_resource_name``; API: APIHandler)."""
    if function == "api_handler":
        return "APIHandler"
    return "".join(w[0].upper() + w[1:] for w in function.replace("-", "_").split("_") if w)


def function_name(function: str) -> dict[str, str]:
    """The deployed function name: the stack name and the handler, so the log group is known."""
    return {"Fn::Sub": f"${{AWS::StackName}}-{function}"}


def _arn(logical: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical, "Arn"]}


def table_arn(table: str) -> dict[str, Any]:
    return _arn(table_id(table))


def index_arn(table: str, index: str) -> dict[str, Any]:
    if index not in {i.name for i in table_def(table).indexes}:
        raise KeyError(f"{table} has no index {index}")
    return {"Fn::Sub": f"${{{table_id(table)}.Arn}}/index/{index}"}


def queue_arn(queue: str) -> dict[str, Any]:
    return _arn(queue_id(queue))


KEY_ARN = _arn("TokenKey")


def _statement(sid: str, actions: tuple[str, ...], resources: list[Any], **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resources, **extra}


def policy_document(function: str, needs: Needs) -> dict[str, Any]:
    """The IAM policy of one function (CloudFormation intrinsics for every resource)."""
    account = "${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
    log_group = f"arn:{account}:log-group:/aws/lambda/${{AWS::StackName}}-{function}"
    statements = [_statement("Logs", LOGS, [{"Fn::Sub": log_group}, {"Fn::Sub": f"{log_group}:*"}])]
    reads = sorted(t for t, access in needs.tables.items() if access == "read")
    writes = sorted(t for t, access in needs.tables.items() if access == "write")
    if reads:
        statements.append(_statement("ReadTables", TABLE_READ, [table_arn(t) for t in reads]))
    if writes:
        statements.append(_statement("WriteTables", TABLE_READ + TABLE_WRITE, [table_arn(t) for t in writes]))
    if needs.indexes:
        pairs = sorted(pair.split("/") for pair in needs.indexes)
        statements.append(_statement("QueryIndexes", INDEX_QUERY, [index_arn(t, i) for t, i in pairs]))
    if needs.sends:
        statements.append(_statement("SendToQueues", QUEUE_SEND, [queue_arn(q) for q in sorted(needs.sends)]))
    if needs.consumes:
        statements.append(_statement("ConsumeQueue", QUEUE_CONSUME, [queue_arn(needs.consumes)]))
    if needs.kms:
        actions = KMS_ENCRYPT if needs.kms == "encrypt" else KMS_DECRYPT
        statements.append(
            _statement("EnvelopeKey", actions, [KEY_ARN], Condition={"StringEquals": dict(KMS_CONTEXT)})
        )
    return {"Version": "2012-10-17", "Statement": statements}


def allows(document: Mapping[str, Any], action: str, resource: Any, context: Mapping[str, str]) -> bool:
    """Does one of the policy's statements allow ``action`` on ``resource`` (an intrinsic)?

    Only what these generated policies use: exact actions, exact resources, and StringEquals
    conditions on the KMS encryption context.
    """
    for statement in document["Statement"]:
        if action not in statement["Action"] or resource not in statement["Resource"]:
            continue
        wanted = statement.get("Condition", {}).get("StringEquals", {})
        prefix = "kms:EncryptionContext:"
        if all(context.get(key.removeprefix(prefix)) == value for key, value in wanted.items()):
            return True
    return False


def policy_file(function: str) -> str:
    """The ``iam_policy_file`` value (relative to ``.chalice/``)."""
    return f"{POLICY_DIR}/{function}.json"


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def generated_files() -> dict[Path, str]:
    """Every policy file's path and content, plus ``.chalice/config.json`` with its entries."""
    files = {
        CHALICE_DIR / policy_file(name): render(policy_document(name, needs))
        for name, needs in FUNCTIONS.items()
    }
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    functions = config.setdefault("lambda_functions", {})
    for name in FUNCTIONS:
        functions.setdefault(name, {})["iam_policy_file"] = policy_file(name)
    for name in list(functions):
        if name not in FUNCTIONS:
            functions[name].pop("iam_policy_file", None)
    files[CHALICE_DIR / "config.json"] = json.dumps(config, indent=2) + "\n"
    return files


def stale_files() -> list[Path]:
    """Generated files whose committed content differs (or that are missing)."""
    return [path for path, text in generated_files().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.iam", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write the policy files and config entries")
    args = parser.parse_args(argv)
    if not args.write:
        stale = stale_files()
        for path in stale:
            sys.stderr.write(f"stale: {path.relative_to(PROJECT_DIR)}\n")
        return 1 if stale else 0
    policy_dir = CHALICE_DIR / POLICY_DIR
    policy_dir.mkdir(exist_ok=True)
    wanted = set()
    for path, text in generated_files().items():
        path.write_text(text)
        wanted.add(path)
    for leftover in policy_dir.glob("*.json"):
        if leftover not in wanted:
            leftover.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
