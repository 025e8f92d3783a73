"""``xpm-broker sync VENDOR_ID/TENANT_REF ...``: sync practices now, in this process, with progress.

The run is the same one the API and the schedule start (a sync already queued or running is
joined, not doubled); the CLI drives it itself while it holds the run's lease, pausing at a rate
limit for up to ``--max-wait`` seconds, after which it hands the run to the queue. With
``--enqueue`` it only queues the runs for the SQS worker.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from chalicelib.errors import BrokerError

COUNTED = ("created", "updated", "archived", "deleted", "unchanged")
POLL_SECONDS = 2.0


def parse_tenant(name: str) -> tuple[str, str]:
    """``VENDOR_ID/TENANT_REF`` (vendor ids and tenant refs contain no ``/``)."""
    vendor_id, sep, tenant_ref = name.partition("/")
    if not sep or not vendor_id or not tenant_ref or "/" in tenant_ref:
        raise BrokerError(
            "invalid_request", 400, "Invalid tenant", f"{name!r}: name a tenant as VENDOR_ID/TENANT_REF."
        )
    return vendor_id, tenant_ref


@dataclass
class TenantResult:
    tenant: str
    status: str  # completed | failed | queued | deferred | error
    sync_id: str | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "status": self.status,
            "sync_id": self.sync_id,
            "error": self.error,
            "counts": {k: self.counts.get(k, 0) for k in COUNTED},
            "xpm_calls": self.counts.get("xpm_calls", 0),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class SyncSummary:
    results: list[TenantResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.status in ("failed", "error"))

    def to_json(self) -> dict[str, Any]:
        return {"tenants": [r.to_json() for r in self.results], "failed": self.failed}

    def lines(self) -> list[str]:
        lines = [f"{'TENANT':<48} {'STATUS':<10} " + " ".join(f"{k:>9}" for k in COUNTED) + "  SECONDS"]
        for r in self.results:
            counts = " ".join(f"{r.counts.get(k, 0):>9}" for k in COUNTED)
            lines.append(f"{r.tenant:<48} {r.status:<10} {counts}  {r.seconds:7.1f}")
            if r.error:
                lines.append(f"  {r.error}")
        return lines


def sync_tenants(
    names: list[str],
    *,
    enqueue: bool = False,
    max_wait: float = 900.0,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncSummary:
    stream = out or sys.stderr
    summary = SyncSummary()
    for name in names:
        started = time.monotonic()
        try:
            result = _sync_one(name, enqueue=enqueue, max_wait=max_wait, stream=stream, sleep=sleep)
        except BrokerError as error:
            result = TenantResult(name, "error", error=f"{error.code}: {error.detail or error.title}")
        result.seconds = time.monotonic() - started
        summary.results.append(result)
    return summary


def _sync_one(
    name: str, *, enqueue: bool, max_wait: float, stream: TextIO, sleep: Callable[[float], None]
) -> TenantResult:
    from chalicelib.storage import new_id
    from chalicelib.sync.engine import Pacer, day_reserve, minute_reserve
    from chalicelib.sync.jobs import LeaseLost, acquire, drive, message_of, request_sync, send
    from chalicelib.tenants.vendors import get_vendor
    from chalicelib.xpm.service import active_connection

    vendor_id, tenant_ref = parse_tenant(name)
    active_connection(get_vendor(vendor_id), tenant_ref)
    state, _ = request_sync(vendor_id, tenant_ref, "cli", enqueue=enqueue)
    sync_id = str(state.sync_id)
    if enqueue:
        return TenantResult(name, "queued", sync_id)
    waited = 0.0
    while True:
        owner = new_id("lease")
        leased = acquire(state.sync_key, sync_id, owner, time.time())
        if leased is None:
            return _wait_for_other(name, state.sync_key, sync_id, stream, sleep)
        pacer = Pacer(minute_reserve=minute_reserve(), day_reserve=day_reserve())
        try:
            outcome = drive(leased, owner, pacer, progress=lambda counts: _progress(stream, name, counts))
        except LeaseLost:
            return _wait_for_other(name, state.sync_key, sync_id, stream, sleep)
        if outcome.status != "deferred":
            stream.write("\n")
            return TenantResult(name, outcome.status, sync_id, outcome.reason or None, outcome.counts)
        if waited + outcome.delay > max_wait:
            send(message_of(leased), outcome.delay)
            stream.write(f"\n{name}: {outcome.reason}; left to the worker in {outcome.delay:.0f} s\n")
            return TenantResult(name, "deferred", sync_id, outcome.reason, outcome.counts)
        stream.write(f"\n{name}: {outcome.reason}; resuming in {outcome.delay:.0f} s\n")
        sleep(outcome.delay)
        waited += outcome.delay


def _wait_for_other(
    name: str, sync_key: str, sync_id: str, stream: TextIO, sleep: Callable[[float], None]
) -> TenantResult:
    """Another driver (the SQS worker) holds the run: follow it until it ends."""
    from chalicelib.storage import find
    from chalicelib.sync.models import SyncState

    stream.write(f"{name}: sync {sync_id} is being run by a worker; waiting\n")
    while True:
        state = find(SyncState, sync_key, consistent=True)
        if state is None or state.sync_id != sync_id:
            return TenantResult(name, "error", sync_id, "the sync was replaced")
        if state.status not in ("queued", "running"):
            return TenantResult(name, state.status, sync_id, state.error_code, state.counts())
        _progress(stream, name, state.counts())
        sleep(POLL_SECONDS)


def _progress(stream: TextIO, name: str, counts: dict[str, int]) -> None:
    parts = " ".join(f"{k} {counts.get(k, 0)}" for k in ("pages", "fetched", *COUNTED[:4]))
    stream.write(f"\r{name}: {parts}")
    stream.flush()
