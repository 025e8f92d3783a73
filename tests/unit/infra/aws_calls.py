"""Record the AWS calls each Lambda function makes, as IAM actions on template resources.

Every client (boto3 and PynamoDB's botocore) goes through ``BaseClient._make_api_call``; a
call made while ``acting_as(name)`` is active is attributed to that function. Each call is
translated into the IAM action(s) AWS authorises it with and the CloudFormation reference of
the resource (``infra.iam``), so it can be checked against the function's policy.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from botocore.client import BaseClient

from chalicelib.config import Settings
from infra.iam import KEY_ARN, index_arn, queue_arn, table_arn

_function: contextvars.ContextVar[str | None] = contextvars.ContextVar("aws_calls_function", default=None)

_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@dataclass(frozen=True)
class Access:
    function: str
    action: str
    resource: str  # json of the CloudFormation reference, hashable
    context: tuple[tuple[str, str], ...] = ()


@dataclass
class Recorder:
    settings: Settings
    accesses: set[Access] = field(default_factory=set)

    def add(self, function: str, service: str, operation: str, params: dict[str, Any]) -> None:
        import json

        for action, resource, context in self._translate(service, operation, params):
            self.accesses.add(
                Access(function, action, json.dumps(resource, sort_keys=True), tuple(sorted(context.items())))
            )

    def _table(self, physical: str) -> str:
        assert physical.startswith(self.settings.table_prefix), physical
        return physical.removeprefix(self.settings.table_prefix)

    def _queue(self, name_or_url: str) -> str:
        name = name_or_url.rstrip("/").rsplit("/", 1)[-1]
        assert name.startswith(self.settings.queue_prefix), name
        return name.removeprefix(self.settings.queue_prefix)

    def _translate(
        self, service: str, operation: str, params: dict[str, Any]
    ) -> Iterator[tuple[str, Any, dict[str, str]]]:
        if service == "dynamodb":
            yield from self._dynamodb(operation, params)
        elif service == "sqs":
            queue = self._queue(params.get("QueueUrl") or params["QueueName"])
            action = "SendMessage" if operation == "SendMessageBatch" else operation
            yield f"sqs:{action}", queue_arn(queue), {}
        elif service == "kms":
            yield f"kms:{operation}", KEY_ARN, dict(params.get("EncryptionContext") or {})
        else:
            yield f"{service}:{operation}", {"unexpected": service}, {}

    def _dynamodb(self, operation: str, params: dict[str, Any]) -> Iterator[tuple[str, Any, dict[str, str]]]:
        if operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                for kind, spec in item.items():
                    yield f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table_arn(self._table(spec["TableName"])), {}
        elif operation == "TransactGetItems":
            for item in params["TransactItems"]:
                yield "dynamodb:GetItem", table_arn(self._table(item["Get"]["TableName"])), {}
        elif operation in {"BatchGetItem", "BatchWriteItem"}:
            for physical in params["RequestItems"]:
                yield f"dynamodb:{operation}", table_arn(self._table(physical)), {}
        elif params.get("IndexName"):
            table = self._table(params["TableName"])
            yield f"dynamodb:{operation}", index_arn(table, params["IndexName"]), {}
        else:
            yield f"dynamodb:{operation}", table_arn(self._table(params["TableName"])), {}


@contextmanager
def recording(settings: Settings) -> Iterator[Recorder]:
    recorder = Recorder(settings)
    original = BaseClient._make_api_call

    def record(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        function = _function.get()
        if function is not None:
            recorder.add(function, client.meta.service_model.service_name, operation_name, api_params)
        return original(client, operation_name, api_params)

    with mock.patch.object(BaseClient, "_make_api_call", record):
        yield recorder


@contextmanager
def acting_as(function: str) -> Iterator[None]:
    """Calls inside are the function's. Each Lambda function runs in its own processes, so the
    data-key cache starts empty (otherwise one function's KMS call would hide another's)."""
    from chalicelib.crypto import reset_cipher

    reset_cipher()
    token = _function.set(function)
    try:
        yield
    finally:
        _function.reset(token)


def as_function(function: str, handler: Any) -> Any:
    def wrapped(event: Any, context: Any) -> Any:
        with acting_as(function):
            return handler(event, context)

    return wrapped
