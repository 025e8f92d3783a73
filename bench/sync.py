"""Change-feed sync: 20,000 clients with 1 % changed, against a raw fetch of the same data.

Measured: one whole sync of the connected practice (API 3.1, ``paged-list`` pages of 500) run
by the worker's code path in this process (``jobs.request_sync`` + ``jobs.run_message``): every
page through the rate governor (its DynamoDB work included), the fingerprints loaded, the 200
changed clients compared with their stored rows and written with their events (one transaction
per chunk), the checkpoint after every page, ``sync.completed``. Before each measured round,
untimed, 1 % of the clients get a new phone number in the sandbox (``PATCH /_sandbox/…``).

Baseline: a raw fetch of the same data: every ``paged-list`` page with the same bearer token
through ``XpmClient`` without a governor (HTTP, gzip, the hardened parse, ``clients_json``) and
nothing else. Both run alternately in the same run (bench/measure.py).

Lines: ``sync.time`` (measured / baseline time), ``sync.events`` (client events written /
clients changed: exactly 1.0 is right; more would be duplicates, fewer lost changes), and the
XPM calls as a ratio to the raw fetch's. The baseline sync of the practice (no client events)
is reported as a metric. moto serves DynamoDB here, over loopback HTTP, from its own process: its
per-call cost (and its whole-table copy per transaction item) is not DynamoDB's.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import pytest
import requests

from bench.aws_calls import recording_aws_calls
from bench.context import RunContext
from bench.measure import alternate
from bench.results import Outcome, Result, Target
from bench.stack import TENANT_REF

NAME = "sync"
CLIENTS = 20_000
CHANGED_SHARE = 0.01
PAGE_SIZE = 500


class SyncBench:
    def __init__(self, context: RunContext) -> None:
        self.stack = context.stack()
        self.vendor_id: str = self.stack.broker.vendor.vendor_id  # type: ignore[attr-defined]
        self.tenant_ref = TENANT_REF
        self.rng = random.Random(20_000)
        self.round = 0
        self.changed: list[int] = []
        self.events: list[int] = []
        self.sync_calls: list[int] = []
        self.raw_calls = 0
        self.active: list[str] = []
        self.aws_seconds: list[float] = []
        self.aws_operations: list[dict[str, int]] = []

    # -- setup ------------------------------------------------------------------------------
    def prepare(self) -> float:
        self.stack.reseed(CLIENTS)
        url = f"{self.stack.sandbox_url}/_sandbox/practices/{self.stack.practice_id}/clients"
        clients = requests.get(url, timeout=300).json()
        self.active = [c["UUID"] for c in clients if not c["IsArchived"] and not c["IsDeleted"]]
        started = time.perf_counter()
        counts = self._sync()
        assert counts["created"] == len(self.active), counts
        return time.perf_counter() - started

    # -- the two paths ----------------------------------------------------------------------
    def raw_fetch(self) -> float:
        from chalicelib.config import get_settings
        from chalicelib.xpm.client import XpmClient
        from chalicelib.xpm.service import GrantTokens

        client = XpmClient(
            base_url=get_settings().xpm_base_url,
            tenant_id=self.stack.practice_id,
            tokens=GrantTokens(self.stack.grant_id),
        )
        started = time.perf_counter()
        fetched, calls, token = 0, 0, None
        while True:
            page, token = client.paged_clients(PAGE_SIZE, token)
            fetched, calls = fetched + len(page), calls + 1
            if token is None:
                break
        elapsed = time.perf_counter() - started
        assert fetched == len(self.active), fetched
        self.raw_calls = calls
        return elapsed

    def measured_sync(self) -> float:
        self._change_one_percent()  # untimed
        before = self._client_events()
        with recording_aws_calls() as aws:
            started = time.perf_counter()
            counts = self._sync()
            elapsed = time.perf_counter() - started
        self.aws_seconds.append(aws.seconds)
        self.aws_operations.append(dict(aws.operations))
        self.events.append(self._client_events() - before)
        self.sync_calls.append(int(counts.get("xpm_calls", 0)))
        assert counts["updated"] == self.changed[-1], counts
        return elapsed

    # -- helpers ----------------------------------------------------------------------------
    def _sync(self) -> dict[str, int]:
        from chalicelib.sync.jobs import message_of, request_sync, run_message

        state, _ = request_sync(self.vendor_id, self.tenant_ref, "cli", enqueue=False)
        for _ in range(20):
            outcome = run_message(message_of(state), deadline=None)
            if outcome.status == "completed":
                return outcome.counts
            assert outcome.status == "deferred", outcome
            time.sleep(min(outcome.delay, 1.0))
        raise AssertionError("the sync did not finish")

    def _change_one_percent(self) -> None:
        self.round += 1
        chosen = self.rng.sample(self.active, int(len(self.active) * CHANGED_SHARE))
        base = f"{self.stack.sandbox_url}/_sandbox/practices/{self.stack.practice_id}/clients"
        session = requests.Session()
        for uuid in chosen:
            response = session.patch(
                f"{base}/{uuid}", json={"Phone": f"(02) 5555 {self.round:04d}"}, timeout=30
            )
            response.raise_for_status()
        self.changed.append(len(chosen))

    def _client_events(self) -> int:
        from chalicelib.webhooks.models import Event

        kinds = ("xpm.client.created", "xpm.client.updated", "xpm.client.archived")
        return sum(1 for e in Event.query(self.vendor_id, consistent_read=True) if e.type in kinds)


def run(context: RunContext) -> list[Outcome]:
    env = pytest.MonkeyPatch()
    try:
        env.setenv("XPMB_XPM_API_VERSION", "3.1")
        env.setenv("XPMB_SYNC_PAGE_SIZE", str(PAGE_SIZE))
        from chalicelib.config import reset_settings

        reset_settings()
        bench = SyncBench(context)
        baseline_sync_seconds = bench.prepare()
        paired = alternate(context.rounds(5, quick=2), bench.raw_fetch, bench.measured_sync)
    finally:
        env.undo()
        from chalicelib.config import reset_settings

        reset_settings()
    return _results(bench, paired, baseline_sync_seconds)


def _results(bench: SyncBench, paired: Any, baseline_sync_seconds: float) -> list[Outcome]:
    parameters = {
        "clients": CLIENTS,
        "active_clients": len(bench.active),
        "changed_per_round": bench.changed[0] if bench.changed else 0,
        "api_version": "3.1",
        "page_size": PAGE_SIZE,
        "measured": "jobs.request_sync + run_message: a whole sync (governor, fingerprints, writes, events)",
        "baseline": "XpmClient.paged_clients over every page, same token, no governor, nothing stored",
    }
    event_ratios = [e / c for e, c in zip(bench.events, bench.changed, strict=True)]
    call_ratios = [c / bench.raw_calls for c in bench.sync_calls]
    time_result = Result(
        name=f"{NAME}.time",
        ratio=paired.median_ratio(),
        target=None,
        median_seconds=statistics.median(paired.measured),
        baseline_median_seconds=statistics.median(paired.baseline),
        spread=paired.spread(),
        round_ratios=paired.ratios,
        rounds=paired.rounds,
        parameters=parameters,
        metrics={
            "baseline_sync_seconds": round(baseline_sync_seconds, 2),
            "xpm_calls_sync": statistics.median(bench.sync_calls),
            "xpm_calls_raw_fetch": bench.raw_calls,
            "xpm_calls_ratio": statistics.median(call_ratios),
            "aws_seconds": round(statistics.median(bench.aws_seconds), 2),
            "seconds_excluding_aws": round(
                statistics.median(m - a for m, a in zip(paired.measured, bench.aws_seconds, strict=True)), 2
            ),
            "aws_operations": bench.aws_operations[-1] if bench.aws_operations else {},
        },
        note=(
            f"sync of {len(bench.active):,} clients, {parameters['changed_per_round']} changed, vs a raw "
            f"fetch of the same pages; {statistics.median(bench.aws_seconds):.1f} s of it in DynamoDB/SQS "
            f"calls to moto; first (baseline) sync {baseline_sync_seconds:.1f} s"
        ),
    )
    events_result = Result(
        name=f"{NAME}.events",
        ratio=statistics.median(event_ratios),
        target=Target("ratio", 1.0, "= 1.0 per change"),
        median_seconds=None,
        baseline_median_seconds=None,
        spread=None,
        round_ratios=event_ratios,
        rounds=len(event_ratios),
        parameters={**parameters, "ratio": "client events written / clients changed"},
        metrics={"events": bench.events, "changed": bench.changed, "exact": bench.events == bench.changed},
        note="one xpm.client.updated per changed client; 0 for the others (the raw fetch emits none)",
    )
    return [time_result, events_result]
