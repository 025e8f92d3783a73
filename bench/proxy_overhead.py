"""Proxy overhead: a signed ``GET /v1/tenants/{ref}/xpm/clients?search=`` returning 100 clients,
through the app in this process, against fetching and parsing the same sandbox response directly.
Target: <= 2 ms median added per request.

Measured path: ``app.app(event, context)`` on a Lambda proxy event for a request signed like a
vendor signs (requests-http-signature). Signing and building the event happen before the clock
starts; what is timed is the Lambda handler: signature verification and the nonce write, the
vendor, key, connection and grant reads, the governor's writes, the XPM call itself, mapping and
the JSON response. Baseline: the same sandbox ``client.api/search`` with the same bearer token
over one ``requests.Session``, then ``parse_response`` + ``check_status`` + ``clients_json``.

Here every DynamoDB and KMS call is an HTTP round trip to a moto server in its own process
(``bench.stack.moto_process``), which opens a new connection per call (werkzeug's server closes
each one) and runs moto's pure-Python request handling: its per-call cost is moto's, not
DynamoDB's. Each timed request records how long its AWS calls took, so the added time can be
read as "AWS round trips" + "everything else".
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import requests

from bench.aws_calls import AwsCalls, recording_aws_calls
from bench.context import RunContext
from bench.measure import Paired, alternate, median_of
from bench.results import Outcome, Result, Target
from bench.stack import TENANT_REF, LocalStack

NAME = "proxy_overhead"
SEARCH_WORD = "Quokkabench"  # in no seeded name: the search finds exactly the clients added here
CLIENT_COUNT = 100
TARGET_ADDED_MS = 2.0


def ensure_clients(stack: LocalStack, search: Callable[[], list[dict[str, Any]]]) -> None:
    """Add ``CLIENT_COUNT`` clients named with ``SEARCH_WORD`` unless the practice has them."""
    if not search():
        for index in range(CLIENT_COUNT):
            stack.insert_client(f"{SEARCH_WORD} Client {index:03d} Pty Ltd")
    found = len(search())
    if found != CLIENT_COUNT:
        raise RuntimeError(f"the sandbox search finds {found} clients, not {CLIENT_COUNT}")


class DirectSearch:
    """The baseline: the sandbox's search answer fetched and parsed without the broker."""

    def __init__(self, stack: LocalStack) -> None:
        self._session = requests.Session()
        self._url = stack.xpm_url("client.api/search")
        self._headers = stack.xpm_headers()

    def __call__(self) -> list[dict[str, Any]]:
        from chalicelib.xpm.mapping import clients_json
        from chalicelib.xpm.xml import check_status, parse_response

        response = self._session.get(
            self._url, params={"query": SEARCH_WORD}, headers=self._headers, timeout=30
        )
        response.raise_for_status()
        root = parse_response(response.content)
        check_status(root)
        return clients_json(root)

    def timed(self) -> float:
        started = time.perf_counter()
        clients = self()
        elapsed = time.perf_counter() - started
        assert len(clients) == CLIENT_COUNT, len(clients)
        return elapsed


class BrokerSearch:
    """The measured path: the Chalice app's Lambda handler on a freshly signed proxy event.

    Each timed request also records how much of it was spent in AWS calls (``aws_calls``, set
    while rounds run), so the added time can be split without a second, different pass.
    """

    def __init__(self, stack: LocalStack) -> None:
        from chalice.local import LambdaContext, LambdaEventConverter, RouteMatcher

        from app import app

        self._app = app
        self._broker: Any = stack.broker
        self._converter = LambdaEventConverter(RouteMatcher(list(app.routes)), app.api.binary_types)
        self._context = LambdaContext("api_handler", 512, max_runtime_ms=30_000)
        self.path = f"/v1/tenants/{TENANT_REF}/xpm/clients?search={SEARCH_WORD}"
        self.aws_calls: AwsCalls | None = None
        self.timings: list[tuple[float, float]] = []  # (request seconds, AWS seconds within it)

    def signed_event(self) -> dict[str, Any]:
        from requests_http_signature import HTTPSignatureAuth, algorithms

        from tests.functional.broker import PUBLIC_URL

        vendor = self._broker.vendor
        prepared = requests.Request("GET", PUBLIC_URL + self.path).prepare()
        HTTPSignatureAuth(
            key=vendor.key_secret.encode(),
            key_id=vendor.key_id,
            signature_algorithm=algorithms.HMAC_SHA256,
            use_nonce=True,
        )(prepared)
        headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
        event: dict[str, Any] = self._converter.create_lambda_event("GET", self.path, headers, b"")
        return event

    def timed(self) -> float:
        event = self.signed_event()  # signing is the vendor's cost: outside the clock
        aws_before = self.aws_calls.seconds if self.aws_calls else 0.0
        started = time.perf_counter()
        response: dict[str, Any] = self._app(event, self._context)
        elapsed = time.perf_counter() - started
        aws = (self.aws_calls.seconds if self.aws_calls else 0.0) - aws_before
        assert response["statusCode"] == 200, response
        assert len(json.loads(response["body"])["clients"]) == CLIENT_COUNT
        self.timings.append((elapsed, aws))
        return elapsed


def run(context: RunContext) -> list[Outcome]:
    stack = context.stack()
    direct, broker = DirectSearch(stack), BrokerSearch(stack)
    ensure_clients(stack, direct)
    for _ in range(3):  # warm-up: connections, caches (key resolver, KMS data key), lazy imports
        direct.timed()
        broker.timed()
    rounds, per_round = context.rounds(9), 5 if context.quick else 10
    broker.timings.clear()
    with recording_aws_calls() as calls:
        broker.aws_calls = calls
        paired = alternate(
            rounds, lambda: median_of(direct.timed, per_round), lambda: median_of(broker.timed, per_round)
        )
    split = _aws_split(paired, broker.timings, per_round)
    operations = {name: round(n / len(broker.timings), 2) for name, n in sorted(calls.operations.items())}
    metrics = {
        "added_ms": paired.median_difference() * 1e3,
        **split,
        "aws_operations_per_request": operations,
    }
    return [
        Result(
            name=NAME,
            ratio=paired.median_ratio(),
            target=Target("added_ms", TARGET_ADDED_MS, "<= 2 ms added"),
            median_seconds=statistics.median(paired.measured),
            baseline_median_seconds=statistics.median(paired.baseline),
            spread=paired.spread(),
            round_ratios=paired.ratios,
            rounds=rounds,
            parameters={
                "request": f"GET {broker.path}",
                "clients_returned": CLIENT_COUNT,
                "requests_per_round_and_path": per_round,
                "per_round_value": "median per-request seconds of the round",
                "aws": "moto server over loopback HTTP (own process, a new connection per call)",
                "xero": "sandbox over loopback HTTP (in this process)",
            },
            metrics=metrics,
            note=_note(metrics),
        )
    ]


def _aws_split(paired: Paired, timings: list[tuple[float, float]], per_round: int) -> dict[str, float]:
    """Per round: the median AWS time of the broker's requests, and the added time without it."""
    aws_ms: list[float] = []
    other_ms: list[float] = []
    for index, baseline in enumerate(paired.baseline):
        chunk = timings[index * per_round : (index + 1) * per_round]
        aws_ms.append(statistics.median(aws for _, aws in chunk) * 1e3)
        other_ms.append((statistics.median(total - aws for total, aws in chunk) - baseline) * 1e3)
    return {
        "aws_ms_per_request": statistics.median(aws_ms),
        "added_ms_excluding_aws": statistics.median(other_ms),
    }


def _note(metrics: dict[str, Any]) -> str:
    operations = metrics["aws_operations_per_request"]
    listed = ", ".join(f"{n:g} {op}" for op, n in operations.items())
    return (
        f"added {metrics['added_ms']:.1f} ms per request (target <= {TARGET_ADDED_MS:g} ms): "
        f"{sum(operations.values()):g} AWS calls to moto per request took "
        f"{metrics['aws_ms_per_request']:.1f} ms ({listed}); "
        f"added without them (per-round median): {metrics['added_ms_excluding_aws']:.1f} ms"
    )
