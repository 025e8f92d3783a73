"""Every function has its own generated, least-privilege policy file (infra/iam.py)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.resources import QUEUES, TABLES
from infra.iam import (
    CHALICE_DIR,
    FUNCTIONS,
    KEY_ARN,
    index_arn,
    policy_file,
    queue_arn,
    stale_files,
    table_arn,
)
from infra.template import build_merge_template


def app_functions() -> set[str]:
    """Every Lambda function Chalice builds from app.app."""
    from app import app

    names = {source.name for source in app.event_sources}
    names |= {function.name for function in app.pure_lambda_functions}
    names |= {handler.name for handler in app.builtin_auth_handlers}
    if app.routes:
        names.add("api_handler")
    return names


def config() -> dict[str, Any]:
    return dict(json.loads((CHALICE_DIR / "config.json").read_text()))


def policy(function: str) -> dict[str, Any]:
    return dict(json.loads((CHALICE_DIR / policy_file(function)).read_text()))


def test_every_handler_on_the_app_has_a_declaration_and_a_policy_file() -> None:
    assert set(FUNCTIONS) == app_functions()
    functions = config()["lambda_functions"]
    for name in FUNCTIONS:
        assert functions[name]["iam_policy_file"] == policy_file(name)
        assert (CHALICE_DIR / policy_file(name)).is_file()


def test_committed_policy_files_and_config_are_generated_ones() -> None:
    assert stale_files() == [], "run: .venv/bin/python -m infra.iam --write"


def test_chalice_uses_the_files_for_every_stage_and_function() -> None:
    settings = config()
    assert settings["autogen_policy"] is False
    assert settings["lambda_architecture"] == "arm64"
    for stage in settings["stages"].values():
        assert not {"autogen_policy", "iam_policy_file", "iam_role_arn", "manage_iam_role"} & set(stage)
        assert "lambda_architecture" not in stage
        for function in stage.get("lambda_functions", {}).values():
            assert not {"autogen_policy", "iam_policy_file", "lambda_architecture"} & set(function)


def _statements(function: str) -> list[dict[str, Any]]:
    return list(policy(function)["Statement"])


def test_no_wildcards_on_dynamodb_kms_or_sqs() -> None:
    for function in FUNCTIONS:
        for statement in _statements(function):
            assert statement["Effect"] == "Allow"
            for action in statement["Action"]:
                assert "*" not in action, (function, action)
            services = {action.split(":")[0] for action in statement["Action"]}
            assert len(services) == 1, statement
            for resource in statement["Resource"]:
                assert isinstance(resource, dict), (function, resource)  # a reference, never "*"
                assert "*" not in json.dumps(resource) or services == {"logs"}, (function, resource)


def test_resources_are_exactly_the_declared_tables_indexes_queues_and_key() -> None:
    resources = build_merge_template("prod")["Resources"]
    for function, needs in FUNCTIONS.items():
        by_service: dict[str, list[Any]] = {"dynamodb": [], "sqs": [], "kms": []}
        for statement in _statements(function):
            service = statement["Action"][0].split(":")[0]
            if service in by_service:
                by_service[service].extend(statement["Resource"])
        tables = [table_arn(t) for t in needs.tables]
        indexes = [index_arn(*pair.split("/")) for pair in needs.indexes]
        assert sorted(map(json.dumps, by_service["dynamodb"])) == sorted(map(json.dumps, tables + indexes))
        queues = [queue_arn(q) for q in (*needs.sends, *([needs.consumes] if needs.consumes else []))]
        assert sorted(map(json.dumps, by_service["sqs"])) == sorted(map(json.dumps, queues))
        assert by_service["kms"] == ([KEY_ARN] if needs.kms else [])
        for resource in by_service["dynamodb"] + by_service["sqs"] + by_service["kms"]:
            target = resource.get("Fn::GetAtt", [None])[0] or resource["Fn::Sub"].split(".")[0][2:]
            assert resources[target]["Type"] in {"AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::KMS::Key"}


def test_index_permissions_only_where_an_index_is_queried_and_it_exists() -> None:
    indexed = {(t.name, i.name) for t in TABLES for i in t.indexes}
    for function, needs in FUNCTIONS.items():
        for pair in needs.indexes:
            table, index = pair.split("/")
            assert (table, index) in indexed, (function, pair)
            assert table in needs.tables, (function, pair)
        sub_resources = [
            r["Fn::Sub"]
            for s in _statements(function)
            for r in s["Resource"]
            if "Fn::Sub" in r and "/index/" in r["Fn::Sub"]
        ]
        assert len(sub_resources) == len(needs.indexes)
        assert all("/index/*" not in r for r in sub_resources)


def test_declared_names_exist_in_the_one_definition_source() -> None:
    tables = {t.name for t in TABLES}
    queues = {q.name for q in QUEUES}
    for function, needs in FUNCTIONS.items():
        assert set(needs.tables) <= tables, function
        assert set(needs.sends) <= queues, function
        assert needs.consumes is None or needs.consumes in queues, function


def test_kms_is_limited_to_the_brokers_encryption_context() -> None:
    from chalicelib.crypto import record_context

    context = record_context("any", "v_1", "r_1")
    for function, needs in FUNCTIONS.items():
        kms = [s for s in _statements(function) if s["Action"][0].startswith("kms:")]
        if not needs.kms:
            assert kms == []
            continue
        (statement,) = kms
        for key, value in statement["Condition"]["StringEquals"].items():
            assert context[key.removeprefix("kms:EncryptionContext:")] == value
