"""Build the ``chalice package --merge-template`` document for a stage.

Every table and queue comes from ``chalicelib.resources`` (the same definitions the local
stack's bootstrap and the tests use), so AWS cannot drift from what the code expects; every
function comes from ``infra.iam.FUNCTIONS`` (checked against ``app.app`` by the tests).
Chalice generates the functions, their roles (policies from ``.chalice/policies``), the REST
API and the schedules; this template adds the stateful resources and alarms, and patches the
generated functions: name, environment, SQS event source (queue by reference, partial batch
failures). Run ``python -m infra.template --stage prod > build/infra.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chalicelib.config import build_settings
from chalicelib.resources import QUEUES, TABLES, QueueDef, TableDef
from infra.iam import FUNCTIONS, function_id, function_name, logical_id, queue_id, table_id

# Settings are built here for resource names only; the deployed URL is the PublicUrl parameter.
NAMES_ONLY = "https://template.invalid"

ALARM_TOPIC = "AlarmTopic"
# prod: 400 days, because the logs hold audit evidence (signature rejections; docs/security.md,
# area 8) and the DSPANZ bar for audit logs is 12 months (security-checklist C5).
LOG_RETENTION_DAYS = {"dev": 14, "prod": 400}
# Hourly sums above which a rotation failure class pages someone (see docs/operator.md).
ROTATION_FAILURE_THRESHOLDS = {
    "RotationFailedUpstream": 5,  # Xero 5xx/timeouts: retried by SQS; a few an hour are noise
    "RotationFailedStorage": 1,
    "RotationFailedOther": 1,
    "RotationFailedInvalidClient": 1,  # a vendor's Xero app credentials stopped working
    "RotationFailedInvalidGrant": 10,  # one user revoking is normal (a webhook tells the vendor)
}

PARAMETERS: dict[str, Any] = {
    "PublicUrl": {
        "Type": "String",
        "Description": "The broker's public base URL (https, no trailing slash); "
        "the Xero redirect URI is {PublicUrl}/oauth/callback",
        "AllowedPattern": "^https://[^\\s]+[^/\\s]$",
    },
    "XeroIdentityUrl": {"Type": "String", "Default": "https://identity.xero.com"},
    "XeroApiUrl": {"Type": "String", "Default": "https://api.xero.com"},
    "AlarmEmail": {
        "Type": "String",
        "Default": "",
        "Description": "Optional: an email address subscribed to the alarm topic",
    },
}


def _table(table: TableDef, physical: str, key_ref: dict[str, Any]) -> dict[str, Any]:
    props = table.create_table_kwargs(physical)
    props["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    props["SSESpecification"] = {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_ref}
    if table.ttl_attribute:
        props["TimeToLiveSpecification"] = {"AttributeName": table.ttl_attribute, "Enabled": True}
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": props,
    }


def _queues(queue: QueueDef, name: str, dlq_name: str) -> dict[str, Any]:
    dlq_id = logical_id("queue", queue.dlq_name)
    return {
        dlq_id: {
            "Type": "AWS::SQS::Queue",
            # Failed work waits here for an operator (docs/operator.md#alarms): keep it.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "QueueName": dlq_name,
                "MessageRetentionPeriod": 1209600,
                "SqsManagedSseEnabled": True,
            },
        },
        queue_id(queue.name): {
            "Type": "AWS::SQS::Queue",
            # Work in flight is also recorded in DynamoDB (due grants, push rows): a queue can go.
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "QueueName": name,
                "MessageRetentionPeriod": 345600,
                "VisibilityTimeout": queue.visibility_timeout,
                # Per-queue settings from the one definition (e.g. token_rescue keeps 14 days).
                **{k: int(v) if v.isdigit() else v for k, v in queue.attributes.items()},
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                    "maxReceiveCount": queue.max_receive_count,
                },
            },
        },
    }


def _key(alias: str) -> dict[str, Any]:
    return {
        "TokenKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": "xpm-broker envelope encryption key",
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            # The account's IAM policies decide (the functions' roles grant
                            # GenerateDataKey/Decrypt on this key only, with the broker's context).
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
            "Properties": {"AliasName": alias, "TargetKeyId": {"Ref": "TokenKey"}},
        },
    }


def _alarm(name: str, description: str, metric: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "AlarmName": {"Fn::Sub": f"${{AWS::StackName}}-{name}"},
        "AlarmDescription": description,
        "ActionsEnabled": True,
        "AlarmActions": [{"Ref": ALARM_TOPIC}],
        "OKActions": [{"Ref": ALARM_TOPIC}],
        "Period": 300,
        "EvaluationPeriods": 1,
        "Statistic": "Sum",
        "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        **metric,
    }
    props.update(overrides)
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}


def _broker_metric(service: str, name: str) -> dict[str, Any]:
    """An EMF metric of the broker: powertools puts the ``service`` dimension on each."""
    return {
        "Namespace": "xpm-broker",
        "MetricName": name,
        "Dimensions": [{"Name": "service", "Value": service}],
    }


def alarms() -> dict[str, Any]:
    from chalicelib.oauth.rotation import ALARM_AGE_DAYS, METRIC_NAMES

    resources: dict[str, Any] = {}
    for queue in QUEUES:
        dlq_id = logical_id("queue", queue.dlq_name)
        resources[logical_id("alarm", queue.dlq_name)] = _alarm(
            f"{queue.dlq_name}-not-empty",
            f"Messages in the {queue.name} dead-letter queue: {queue.purpose} failed "
            f"{queue.max_receive_count} times (docs/operator.md#alarms)",
            {
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}],
                "Statistic": "Maximum",
            },
        )
    for metric in sorted({m for m in METRIC_NAMES.values() if m.startswith("RotationFailed")}):
        threshold = ROTATION_FAILURE_THRESHOLDS[metric]
        resources[logical_id("alarm", metric)] = _alarm(
            f"{metric}",
            f"Scheduled token refreshes failing ({metric} >= {threshold} in an hour; "
            "docs/operator.md#alarms)",
            _broker_metric("rotation", metric),
            Period=3600,
            Threshold=threshold,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
    resources["AlarmOldestGrantAge"] = _alarm(
        "OldestGrantAge",
        f"A due grant is {ALARM_AGE_DAYS}+ days old: Xero kills refresh tokens unused for 60 days "
        "(docs/operator.md#alarms)",
        _broker_metric("rotation", "OldestGrantAgeDays"),
        Period=3600,
        Statistic="Maximum",
        Threshold=ALARM_AGE_DAYS,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    resources["AlarmRotationPlannerSilent"] = _alarm(
        "RotationPlannerSilent",
        "The hourly rotation planner published nothing for 3 hours (docs/operator.md#alarms)",
        _broker_metric("rotation", "GrantsDue"),
        Period=3600,
        EvaluationPeriods=3,
        Statistic="SampleCount",
        Threshold=1,
        ComparisonOperator="LessThanThreshold",
        TreatMissingData="breaching",
    )
    resources["AlarmWebhookEndpointDisabled"] = _alarm(
        "WebhookEndpointDisabled",
        "A vendor's webhook endpoint was disabled after failing deliveries (docs/operator.md#alarms)",
        _broker_metric("webhooks", "WebhookEndpointDisabled"),
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        Threshold=1,
    )
    for function in FUNCTIONS:
        resources[logical_id("alarm", function, "errors")] = _alarm(
            f"{function}-errors",
            f"The {function} function failed (an unhandled error or a timeout; docs/operator.md#alarms)",
            {
                "Namespace": "AWS/Lambda",
                "MetricName": "Errors",
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id(function)}}],
            },
        )
    return resources


def _alarm_topic() -> dict[str, Any]:
    return {
        ALARM_TOPIC: {
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": {"Fn::Sub": "${AWS::StackName}-alarms"}},
        },
        "AlarmEmailSubscription": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "HasAlarmEmail",
            "Properties": {
                "Protocol": "email",
                "Endpoint": {"Ref": "AlarmEmail"},
                "TopicArn": {"Ref": ALARM_TOPIC},
            },
        },
    }


def function_patches(stage: str) -> dict[str, Any]:
    """Deep-merged into the functions Chalice generates (``.chalice/config.json`` has the rest)."""
    settings = build_settings(
        {"XPMB_STAGE": stage, "XPMB_KMS_KEY_ID": "template", "XPMB_PUBLIC_URL": NAMES_ONLY}
    )
    environment = {
        "XPMB_PUBLIC_URL": {"Ref": "PublicUrl"},
        "XERO_IDENTITY_URL": {"Ref": "XeroIdentityUrl"},
        "XERO_API_URL": {"Ref": "XeroApiUrl"},
        "XPMB_KMS_KEY_ID": {"Fn::GetAtt": ["TokenKey", "Arn"]},
        "XPMB_TABLE_PREFIX": settings.table_prefix,
        "XPMB_QUEUE_PREFIX": settings.queue_prefix,
    }
    patches: dict[str, Any] = {}
    for function, needs in FUNCTIONS.items():
        props: dict[str, Any] = {
            "FunctionName": function_name(function),
            "Environment": {"Variables": dict(environment)},
        }
        depends_on = [log_group_id(function)]
        if needs.consumes:
            # Chalice names the queue by its ARN (a string, so CloudFormation sees no dependency)
            # and cannot set FunctionResponseTypes (stack-notes §1.7). SAM passes DependsOn to the
            # function, and the event source mapping refers to the function: the queue comes first.
            depends_on.append(queue_id(needs.consumes))
            props["Events"] = {
                f"{function_id(function)}SqsEventSource": {
                    "Properties": {"FunctionResponseTypes": ["ReportBatchItemFailures"]}
                }
            }
        patches[function_id(function)] = {"DependsOn": depends_on, "Properties": props}
        patches[log_group_id(function)] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{function}"},
                "RetentionInDays": LOG_RETENTION_DAYS[stage],
            },
        }
    return patches


def log_group_id(function: str) -> str:
    return f"{function_id(function)}Logs"


# API Gateway answers some requests itself (an unknown path, a throttled stage, a body over its
# limit, an integration timeout) before any Lambda runs: those bodies are problem+json too
# (contract §4), with the request id. Each type gets one fixed status so the body can state it.
GATEWAY_PROBLEMS: dict[str, tuple[int, str, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (404, "not_found", "Not found"),  # API Gateway's 403 for no route
    "THROTTLED": (429, "rate_limited", "Too many requests"),
    "REQUEST_TOO_LARGE": (413, "payload_too_large", "Payload too large"),
    "INTEGRATION_TIMEOUT": (504, "upstream_unavailable", "Service unavailable"),
    "DEFAULT_4XX": (400, "bad_request", "Bad request"),
    "DEFAULT_5XX": (502, "upstream_unavailable", "Service unavailable"),
}


def gateway_responses() -> dict[str, Any]:
    resources: dict[str, Any] = {}
    for response_type, (status, code, title) in GATEWAY_PROBLEMS.items():
        body = json.dumps(
            {
                "type": f"https://xpm-broker.dev/problems/{code}",
                "title": title,
                "status": status,
                "detail": "$context.error.messageString",
                "code": code,
                "request_id": "$context.requestId",
            }
        ).replace('"$context.error.messageString"', "$context.error.messageString")
        resources[logical_id("gateway", response_type.lower())] = {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {
                "RestApiId": {"Ref": "RestAPI"},
                "ResponseType": response_type,
                "StatusCode": str(status),
                "ResponseParameters": {
                    "gatewayresponse.header.Content-Type": "'application/problem+json'",
                    "gatewayresponse.header.X-Request-Id": "context.requestId",
                },
                "ResponseTemplates": {"application/json": body},
            },
        }
    return resources


def build_merge_template(stage: str) -> dict[str, Any]:
    settings = build_settings(
        {"XPMB_STAGE": stage, "XPMB_KMS_KEY_ID": f"alias/xpmb-{stage}", "XPMB_PUBLIC_URL": NAMES_ONLY}
    )
    key_ref = {"Fn::GetAtt": ["TokenKey", "Arn"]}
    resources: dict[str, Any] = _key(settings.kms_key_id)
    for table in TABLES:
        resources[table_id(table.name)] = _table(table, settings.table_name(table.name), key_ref)
    for queue in QUEUES:
        resources.update(_queues(queue, settings.queue_name(queue.name), settings.queue_name(queue.dlq_name)))
    resources.update(_alarm_topic())
    resources.update(alarms())
    resources.update(function_patches(stage))
    resources.update(gateway_responses())
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"xpm-broker ({stage})",
        "Parameters": PARAMETERS,
        "Conditions": {"HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}},
        "Resources": resources,
        "Outputs": {
            "TokenKeyArn": {"Value": {"Fn::GetAtt": ["TokenKey", "Arn"]}},
            "AlarmTopicArn": {"Value": {"Ref": ALARM_TOPIC}},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.template")
    parser.add_argument("--stage", default="prod", choices=["dev", "prod"])
    args = parser.parse_args(argv)
    json.dump(build_merge_template(args.stage), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
