"""Chalice's own template generation + the merge template, linted by cfn-lint.

This is ``make package`` minus the deployment zip (``infra.package`` replaces the zip step: the
SAM template does not depend on it), so it runs in a few seconds without PyPI. The zip itself
(arm64 wheels) is built by ``make package``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.iam import FUNCTIONS, PROJECT_DIR, function_id, queue_id
from infra.template import build_merge_template

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package")
    merge = out / "infra-prod.json"
    merge.write_text(json.dumps(build_merge_template("prod")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XPMB_", "AWS_ENDPOINT"))}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.package",
            "--stage",
            "prod",
            "--merge-template",
            str(merge),
            str(out / "pkg"),
        ],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out / "pkg" / "sam.json"


def _template(sam: Path) -> dict[str, Any]:
    return dict(json.loads(sam.read_text()))


def test_cfn_lint_is_clean_including_informational_checks(sam: Path) -> None:
    result = subprocess.run(
        [str(BIN / "cfn-lint"), "--include-checks", "I", "--", str(sam)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_every_function_is_arm64_with_its_own_role_and_policy_file(sam: Path) -> None:
    resources = _template(sam)["Resources"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {function_id(f) for f in FUNCTIONS}
    for name in FUNCTIONS:
        props = functions[function_id(name)]["Properties"]
        assert props["Architectures"] == ["arm64"]
        assert props["Environment"]["Variables"]["XPMB_STAGE"] == "prod"
        role = props["Role"]["Fn::GetAtt"][0]
        (policy,) = resources[role]["Properties"]["Policies"]
        expected = json.loads((PROJECT_DIR / ".chalice" / "policies" / f"{name}.json").read_text())
        assert policy["PolicyDocument"] == expected
    roles = [props["Properties"]["Role"]["Fn::GetAtt"][0] for props in functions.values()]
    assert len(set(roles)) == len(roles)


def test_sqs_event_sources_report_partial_failures_on_the_template_queues(sam: Path) -> None:
    resources = _template(sam)["Resources"]
    for name, needs in FUNCTIONS.items():
        function = resources[function_id(name)]
        events = function["Properties"].get("Events", {})
        sqs = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
        if not needs.consumes:
            assert sqs == []
            continue
        (event,) = sqs
        queue = resources[queue_id(needs.consumes)]["Properties"]["QueueName"]
        assert event["Queue"] == {
            "Fn::Sub": f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{queue}"
        }
        assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert queue_id(needs.consumes) in function["DependsOn"]


def test_schedules_are_in_the_package(sam: Path) -> None:
    from chalice.app import ScheduledEventConfig

    from app import app

    resources = _template(sam)["Resources"]
    schedules = [s for s in app.event_sources if isinstance(s, ScheduledEventConfig)]
    assert schedules
    for source in schedules:
        events = resources[function_id(source.name)]["Properties"]["Events"]
        (event,) = events.values()
        assert event == {
            "Type": "Schedule",
            "Properties": {"Schedule": _expression(source.schedule_expression)},
        }


def _expression(expression: Any) -> str:
    return expression if isinstance(expression, str) else str(expression.to_string())
