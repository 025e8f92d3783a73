"""Cold start: a fresh interpreter importing ``app`` and answering one ``GET /health``, against a
fresh interpreter that only does ``import boto3; boto3.client("dynamodb")`` (the floor any
boto-based Lambda pays). Target: <= 1.3x. Peak RSS of both is reported alongside.

The app is called the way Lambda calls it, ``app.app(event, context)``, with a minimal API
Gateway (REST, payload 1.0) proxy event; ``AWS_ENDPOINT_URL`` points at a closed port and the
credentials are fake, so nothing may reach AWS (``/health`` needs no AWS call).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.children import run_child
from bench.context import RunContext
from bench.measure import Paired, alternate
from bench.results import Outcome, Result, Target

NAME = "cold_start"
HEALTH_EVENT: dict[str, Any] = {
    "resource": "/health",
    "path": "/health",
    "httpMethod": "GET",
    "headers": {"Accept": "application/json"},
    "multiValueHeaders": {"Accept": ["application/json"]},
    "queryStringParameters": None,
    "multiValueQueryStringParameters": None,
    "pathParameters": None,
    "stageVariables": None,
    "requestContext": {
        "resourcePath": "/health",
        "httpMethod": "GET",
        "path": "/local/health",
        "stage": "local",
        "requestId": "bench-cold-start-request",
        "identity": {"sourceIp": "127.0.0.1"},
    },
    "body": None,
    "isBase64Encoded": False,
}
# Each child times its own work and prints its peak RSS (bench/children.py) as the last thing it does.
_REPORT = (
    "import json as _j\n"
    "print(_j.dumps({'seconds': _t.perf_counter() - _started, 'max_rss_kib': _status_kib('VmHWM')}))\n"
)
APP_CHILD = (
    "import time as _t\n_started = _t.perf_counter()\n"
    "import app\n"
    f"_response = app.app({HEALTH_EVENT!r}, None)\n"
    "assert _response['statusCode'] == 200, _response\n" + _REPORT
)
BOTO_CHILD = (
    "import time as _t\n_started = _t.perf_counter()\n"
    "import boto3\n"
    "boto3.client('dynamodb', region_name='us-east-1')\n" + _REPORT
)
CHILD_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: a stray AWS call fails fast
    "XPMB_STAGE": "local",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


class ChildRuns:
    """Wall time (parent side), in-child time and peak RSS of each fresh interpreter run."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.wall: list[float] = []
        self.inside: list[float] = []
        self.rss_kib: list[int] = []

    def warm_up(self) -> None:
        """One unrecorded run: bytecode caches and the page cache, for both sides alike."""
        self._execute()

    def run(self) -> float:
        wall, report = self._execute()
        self.wall.append(wall)
        self.inside.append(float(report["seconds"]))
        self.rss_kib.append(int(report["max_rss_kib"]))
        return wall

    def _execute(self) -> tuple[float, dict[str, Any]]:
        return run_child(self.code, env=CHILD_ENV)


def run(context: RunContext) -> list[Outcome]:
    app_runs, boto_runs = ChildRuns(APP_CHILD), ChildRuns(BOTO_CHILD)
    app_runs.warm_up()
    boto_runs.warm_up()
    rounds = context.rounds(9)
    wall = alternate(rounds, boto_runs.run, app_runs.run)
    inside = Paired(boto_runs.inside, app_runs.inside)
    rss = Paired([float(k) for k in boto_runs.rss_kib], [float(k) for k in app_runs.rss_kib])
    return [_time_result(wall, inside, rounds), _rss_result(rss, rounds)]


def _time_result(wall: Paired, inside: Paired, rounds: int) -> Result:
    return Result(
        name=NAME,
        ratio=wall.median_ratio(),
        target=Target("ratio", 1.3, "<= 1.3x"),
        median_seconds=statistics.median(wall.measured),
        baseline_median_seconds=statistics.median(wall.baseline),
        spread=wall.spread(),
        round_ratios=wall.ratios,
        rounds=rounds,
        parameters={
            "measured": "fresh interpreter: import app; app.app(GET /health event, None)",
            "baseline": "fresh interpreter: import boto3; boto3.client('dynamodb')",
            "timing": "wall clock of the whole child process, seen by the parent",
        },
        metrics={
            "in_process_ratio": inside.median_ratio(),
            "in_process_median_seconds": statistics.median(inside.measured),
            "in_process_baseline_median_seconds": statistics.median(inside.baseline),
            "interpreter_startup_seconds_estimate": statistics.median(wall.baseline)
            - statistics.median(inside.baseline),
        },
        note=(
            f"import+handle only (no interpreter start-up): {inside.median_ratio():.2f}x "
            f"({statistics.median(inside.measured) * 1e3:.0f} ms vs "
            f"{statistics.median(inside.baseline) * 1e3:.0f} ms)"
        ),
    )


def _rss_result(rss: Paired, rounds: int) -> Result:
    app_kib, boto_kib = statistics.median(rss.measured), statistics.median(rss.baseline)
    return Result(
        name=f"{NAME}.peak_rss",
        ratio=rss.median_ratio(),
        target=None,
        median_seconds=None,
        baseline_median_seconds=None,
        spread=rss.spread(),
        round_ratios=rss.ratios,
        rounds=rounds,
        parameters={"measured": "VmHWM of the app child", "baseline": "VmHWM of the boto3 child"},
        metrics={"peak_bytes": app_kib * 1024, "baseline_peak_bytes": boto_kib * 1024},
        note=f"peak RSS {app_kib / 1024:.1f} MiB (app) vs {boto_kib / 1024:.1f} MiB (boto3 client)",
    )
