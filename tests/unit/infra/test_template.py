"""The merge template: every table, queue, alarm and function patch, derived from the code."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from chalicelib.resources import QUEUES, TABLES
from infra.iam import FUNCTIONS, PROJECT_DIR, function_id, logical_id, queue_id, table_id
from infra.template import build_merge_template


def test_template_declares_every_table_and_queue_from_the_one_definition() -> None:
    resources = build_merge_template("prod")["Resources"]
    tables = {
        r["Properties"]["TableName"]: r for r in resources.values() if r.get("Type") == "AWS::DynamoDB::Table"
    }
    assert set(tables) == {f"xpmb-prod-{t.name}" for t in TABLES}
    for table in TABLES:
        props = tables[f"xpmb-prod-{table.name}"]["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"] == {
            "SSEEnabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": {"Fn::GetAtt": ["TokenKey", "Arn"]},
        }
        assert props["KeySchema"][0]["AttributeName"] == table.hash_key.name
        if table.ttl_attribute:
            assert props["TimeToLiveSpecification"] == {"AttributeName": table.ttl_attribute, "Enabled": True}
    queues = {
        r["Properties"]["QueueName"]: r for r in resources.values() if r.get("Type") == "AWS::SQS::Queue"
    }
    for queue in QUEUES:
        main = queues[f"xpmb-prod-{queue.name}"]["Properties"]
        assert main["RedrivePolicy"]["maxReceiveCount"] == queue.max_receive_count
        assert f"xpmb-prod-{queue.dlq_name}" in queues
        assert main["SqsManagedSseEnabled"] is True
        assert queues[f"xpmb-prod-{queue.dlq_name}"]["Properties"]["SqsManagedSseEnabled"] is True
    key = resources["TokenKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    assert resources["TokenKeyAlias"]["Properties"]["AliasName"] == "alias/xpmb-prod"


# -- every table and queue the code uses ---------------------------------------------------

_NAMED_IN_CODE = re.compile(
    r"\b(table_name|table_def|queue_name|queue_name_for_handlers|queue_def)\(\s*\"([a-z_]+)\""
)


def _resources() -> dict[str, Any]:
    return dict(build_merge_template("prod")["Resources"])


def _typed(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _resources().items() if v.get("Type") == kind}


def test_every_models_table_is_in_the_template() -> None:
    import chalicelib.audit
    import chalicelib.oauth.models
    import chalicelib.tenants.models
    import chalicelib.webhooks.models
    import chalicelib.xpm.governor
    import chalicelib.xpm.push_models  # noqa: F401 - importing registers the models
    from chalicelib.storage import registered_models

    tables = {r["Properties"]["TableName"] for r in _typed("AWS::DynamoDB::Table").values()}
    models = registered_models()
    assert len(models) >= 10
    for model in models:
        assert f"xpmb-prod-{model.logical_table}" in tables, model.__name__
        assert table_id(model.logical_table) in _resources(), model.__name__


def test_every_table_and_queue_named_in_the_code_is_in_the_template() -> None:
    resources = _resources()
    named: list[tuple[str, str]] = []
    for path in [PROJECT_DIR / "app.py", *Path(PROJECT_DIR, "chalicelib").rglob("*.py")]:
        named += _NAMED_IN_CODE.findall(path.read_text())
    assert ("table_name", "idempotency") in named and ("queue_name_for_handlers", "pushes") in named
    for function, name in named:
        logical = table_id(name) if function.startswith("table") else queue_id(name)
        assert logical in resources, (function, name)


def test_every_sqs_handler_consumes_a_template_queue_with_partial_batch_failures() -> None:
    from chalice.app import SQSEventConfig

    from app import app
    from chalicelib.config import queue_name_for_handlers

    resources = _resources()
    consumers = {s.name: s.queue for s in app.event_sources if isinstance(s, SQSEventConfig)}
    assert consumers, "the app has SQS handlers"
    for function, queue in consumers.items():
        needs = FUNCTIONS[function]
        assert needs.consumes and queue == queue_name_for_handlers(needs.consumes), function
        patch = resources[function_id(function)]
        assert queue_id(needs.consumes) in patch["DependsOn"]
        event = patch["Properties"]["Events"][f"{function_id(function)}SqsEventSource"]["Properties"]
        assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert {f for f, n in FUNCTIONS.items() if n.consumes} == set(consumers)


def test_queue_visibility_covers_the_consumers_timeout() -> None:
    """Lambda refuses an SQS event source whose visibility timeout is below the function's timeout."""
    from chalice.config import Config

    settings = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    queues = {q.name: q for q in QUEUES}
    for function, needs in FUNCTIONS.items():
        if not needs.consumes:
            continue
        config = Config(
            chalice_stage="prod",
            function_name=function,
            user_provided_params={},
            config_from_disk=settings,
            default_params={"lambda_timeout": 60},  # Chalice's default
        )
        assert queues[needs.consumes].visibility_timeout >= config.lambda_timeout, function


def test_every_dlq_has_an_alarm_to_the_topic() -> None:
    alarms = _typed("AWS::CloudWatch::Alarm").values()
    for queue in QUEUES:
        dlq_id = logical_id("queue", queue.dlq_name)
        (alarm,) = [
            a["Properties"]
            for a in alarms
            if a["Properties"]["Namespace"] == "AWS/SQS"
            and a["Properties"]["Dimensions"]
            == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
        ]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def _emf(emit: Any) -> list[dict[str, Any]]:
    """What powertools writes to the log for CloudWatch (EMF), one dict per flush."""
    out = io.StringIO()
    with redirect_stdout(out):
        emit()
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def _dimensions(blob: dict[str, Any]) -> list[dict[str, str]]:
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    (names,) = directive["Dimensions"]
    return [{"Name": name, "Value": blob[name]} for name in names]


def _alarm_on(metric: str) -> dict[str, Any]:
    (alarm,) = [
        a["Properties"]
        for a in _typed("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == metric
    ]
    return dict(alarm)


def test_rotation_alarms_match_the_metrics_the_code_emits(monkeypatch: Any) -> None:
    from chalicelib.oauth import rotation

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "xpm-broker")
    failures = {o: m for o, m in rotation.METRIC_NAMES.items() if m.startswith("RotationFailed")}
    (blob,) = _emf(lambda: rotation.publish_counts(Counter(dict.fromkeys(failures, 1))))
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "xpm-broker"
    emitted = {m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert emitted == set(failures.values())
    for metric in emitted:
        alarm = _alarm_on(metric)
        assert alarm["Namespace"] == "xpm-broker"
        assert alarm["Dimensions"] == _dimensions(blob)
        assert alarm["Statistic"] == "Sum" and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_oldest_grant_age_alarm_matches_the_planners_metric(monkeypatch: Any) -> None:
    from chalicelib.oauth import rotation

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "xpm-broker")

    def planner_metrics() -> None:
        metrics = rotation._metrics()
        metrics.add_metric(name="OldestGrantAgeDays", unit="Count", value=46.0)
        metrics.flush_metrics()

    (blob,) = _emf(planner_metrics)
    alarm = _alarm_on("OldestGrantAgeDays")
    assert alarm["Dimensions"] == _dimensions(blob) == [{"Name": "service", "Value": "rotation"}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (45, "GreaterThanOrEqualToThreshold")
    assert alarm["Threshold"] == rotation.ALARM_AGE_DAYS and alarm["Statistic"] == "Maximum"
    assert "OldestGrantAgeDays" in Path(rotation.__file__).read_text()  # the planner emits it


def test_webhook_endpoint_disabled_alarm() -> None:
    alarm = _alarm_on("WebhookEndpointDisabled")
    assert alarm["Namespace"] == "xpm-broker"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "webhooks"}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")


def test_functions_get_the_stage_environment_and_a_log_group() -> None:
    resources = _resources()
    for function in FUNCTIONS:
        props = resources[function_id(function)]["Properties"]
        env = props["Environment"]["Variables"]
        assert env["XPMB_TABLE_PREFIX"] == env["XPMB_QUEUE_PREFIX"] == "xpmb-prod-"
        assert env["XPMB_KMS_KEY_ID"] == {"Fn::GetAtt": ["TokenKey", "Arn"]}
        assert env["XPMB_PUBLIC_URL"] == {"Ref": "PublicUrl"}
        assert props["FunctionName"] == {"Fn::Sub": f"${{AWS::StackName}}-{function}"}
        log_group = resources[f"{function_id(function)}Logs"]["Properties"]
        assert log_group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{function}"}
        # Signature rejections are audited in these logs only (docs/security.md, area 8): the
        # DSPANZ bar is 12 months of audit logs (security-checklist C5: >= 400 days).
        assert log_group["RetentionInDays"] >= 400


def test_api_gateways_own_errors_are_problem_json() -> None:
    import json as json_module

    from infra.template import build_merge_template

    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in build_merge_template("prod")["Resources"].values()
        if r.get("Type") == "AWS::ApiGateway::GatewayResponse"
    }
    assert {"MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED"} <= set(responses)
    for props in responses.values():
        assert props["RestApiId"] == {"Ref": "RestAPI"}
        headers = props["ResponseParameters"]
        assert headers["gatewayresponse.header.Content-Type"] == "'application/problem+json'"
        # API Gateway substitutes the quoted message; with a sample quoted value it is valid JSON.
        rendered = props["ResponseTemplates"]["application/json"].replace(
            "$context.error.messageString", '"Missing Authentication Token"'
        )
        problem = json_module.loads(rendered.replace("$context.requestId", "req-1"))
        assert problem["status"] == int(props["StatusCode"])
        assert set(problem) >= {"type", "title", "status", "detail", "code"}
