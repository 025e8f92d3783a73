"""One sync pass over a practice: fetch, compare fingerprints, write what changed with its event.

Passes (xero-reference §3.3, §3.10):
- ``paged`` (API 3.1): every ``client.api/paged-list`` page, then the clients the pass did not
  list. ``paged-list`` leaves out archived and deleted clients, so a client that was listed
  before and is missing now is read with ``client.api/get``: archived, or gone (deleted).
- ``full_list`` (API 3.0, the first pass and then every ``XPMB_SYNC_FULL_PASS_DAYS``): one
  ``client.api/list``, archived included; a client it no longer lists was deleted.
- ``modified_since`` (API 3.0 otherwise): ``client.api/list?modifiedsince=`` from the watermark
  (the previous pass's start less an overlap; fingerprints make re-reading harmless).

Progress survives anything: every ``CHECKPOINT_PAGES`` pages, and before any deliberate stop,
the changes found are written with their events and the checkpoint (page token, counts)
saved, so a rate limit or the end of the invocation resumes at the page it stopped at, a crash
at the last checkpoint, and a page read twice announces nothing twice (its fingerprints match).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from chalicelib.sync.fingerprint import Entry, changed_fields, fingerprint, flag_of, snapshot_of
from chalicelib.sync.models import ACTIVE, DELETED, SyncState, snapshot_key
from chalicelib.sync.store import (
    Change,
    Manifest,
    flush_buckets,
    load_manifest,
    load_seen,
    old_snapshots,
    save_seen,
    write_baseline,
    write_changes,
)
from chalicelib.xpm.client import XpmClient
from chalicelib.xpm.errors import XpmNotFound, XpmRateLimited
from chalicelib.xpm.service import TenantXpm

logger = logging.getLogger("xpmb.sync")
T = TypeVar("T")

PAGED, FULL_LIST, MODIFIED_SINCE = "paged", "full_list", "modified_since"
FETCH, VANISHED = "fetch", "vanished"
CHUNK = 500  # clients compared (and old rows fetched) per step of a long list
CHECKPOINT_PAGES = 10
FLUSH_AT = 100  # pending changes written together (one BatchGet of their old rows)
MINUTE_PAUSE = 60.0
DAY_PAUSE = 3600.0


def _env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    value = int(raw) if raw.isdigit() else default
    return min(max(value, low), high)


def page_size() -> int:
    """``XPMB_SYNC_PAGE_SIZE`` (default 500, paged-list allows 1-500)."""
    return _env_int("XPMB_SYNC_PAGE_SIZE", 500, 1, 500)


def minute_reserve() -> int:
    """``XPMB_SYNC_MINUTE_RESERVE``: calls a minute left to vendors' live requests (default 10)."""
    return _env_int("XPMB_SYNC_MINUTE_RESERVE", 10, 0, 59)


def day_reserve() -> int:
    """``XPMB_SYNC_DAY_RESERVE``: calls a day left to vendors' live requests (default 500)."""
    return _env_int("XPMB_SYNC_DAY_RESERVE", 500, 0, 4999)


def full_pass_seconds() -> float:
    """``XPMB_SYNC_FULL_PASS_DAYS`` (3.0 only, default 7): how often a whole list finds deletions."""
    return _env_int("XPMB_SYNC_FULL_PASS_DAYS", 7, 1, 365) * 86400.0


def max_list_bytes() -> int:
    """``XPMB_SYNC_MAX_LIST_MB`` (default 64): the response cap for a whole-practice list (3.0)."""
    return _env_int("XPMB_SYNC_MAX_LIST_MB", 64, 5, 1024) * 1024 * 1024


class Defer(Exception):
    """Stop for now (checkpoint saved by the caller) and continue after ``delay`` seconds."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = max(0.0, delay)
        self.reason = reason


@dataclass
class Pacer:
    """Keeps a pass inside the governor's budget with room for vendors, and inside its time.

    Every call already goes through the rate governor (``XpmClient``), which refuses a call
    over Xero's limits; the pacer also stops *before* the minute or day budget that Xero reports
    (``X-MinLimit-Remaining``, ``X-DayLimit-Remaining``) drops to the reserve, so a sync never
    starves a vendor's live search. ``deadline`` (``time.monotonic``) ends an invocation early
    enough to save its checkpoint.
    """

    deadline: float | None = None
    minute_reserve: int = 10
    day_reserve: int = 500
    minute_left: int | None = None
    day_left: int | None = None
    monotonic: Callable[[], float] = time.monotonic

    def before_call(self) -> None:
        if self.deadline is not None and self.monotonic() >= self.deadline:
            raise Defer(0, "time")
        if self.day_left is not None and self.day_left <= self.day_reserve:
            raise Defer(DAY_PAUSE, "day_budget")
        if self.minute_left is not None and self.minute_left <= self.minute_reserve:
            raise Defer(MINUTE_PAUSE, "minute_budget")

    def observe(self, headers: Mapping[str, str]) -> None:
        self.minute_left = _count(headers.get("X-MinLimit-Remaining"), self.minute_left)
        self.day_left = _count(headers.get("X-DayLimit-Remaining"), self.day_left)


def _count(value: str | None, previous: int | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else previous


class SyncRun:
    """Continue ``state``'s pass from its checkpoint until it is done (or ``Defer`` is raised).

    ``checkpoint(run)`` persists ``state``'s checkpoint fields and the counts; it is called
    after every page and before a deferral.
    """

    def __init__(
        self,
        state: SyncState,
        xpm: TenantXpm,
        pacer: Pacer,
        checkpoint: Callable[[SyncRun], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert xpm.connection.xero_tenant_id and state.sync_id
        self.state = state
        self.sync_id: str = state.sync_id
        self.xpm = xpm
        self.pacer = pacer
        self._checkpoint = checkpoint
        self._clock = clock
        self.vendor_id = state.vendor_id
        self.tenant_ref = state.tenant_ref
        self.tenant_key = snapshot_key(state.vendor_id, state.tenant_ref, xpm.connection.xero_tenant_id)
        self.counts: Counter[str] = Counter(state.counts())
        self.initial = bool(state.initial)
        self.manifest: Manifest | None = None
        # Found since the last flush: changes (written with their events in few transactions)
        # and the UUIDs of each page read (written at the checkpoint that moves past them).
        self._pending: dict[str, tuple[dict[str, Any], str, Entry | None]] = {}
        self._seen: list[tuple[int, list[str]]] = []

    # -- the passes ---------------------------------------------------------------------------
    def execute(self) -> None:
        self.manifest = load_manifest(self.tenant_key)
        if self.state.mode == PAGED:
            self._paged()
        elif self.state.mode == FULL_LIST:
            self._full_list()
        else:
            self._modified_since()
        self._flush()

    def checkpoint(self) -> None:
        """Write what was found since the last checkpoint, then the checkpoint itself."""
        self._flush()
        self._checkpoint(self)

    def _flush(self) -> None:
        if self.manifest is None:
            return
        self._flush_pending()
        if self._seen:
            save_seen(self.sync_id, self._seen)
            self._seen = []
        if self.initial:
            flush_buckets(self.manifest)

    def _paged(self) -> None:
        size = page_size()
        while (self.state.phase or FETCH) == FETCH:
            token = self.state.page_token
            page, next_token = self._call(partial(XpmClient.paged_clients, page_size=size, page_token=token))
            self._apply(page)
            pages = int(self.state.pages or 0)
            self._seen.append((pages, [str(c["uuid"]) for c in page]))
            self.state.pages = pages + 1
            self.state.page_token = next_token
            self.state.phase = FETCH if next_token else VANISHED
            self.counts["pages"] += 1
            # Every few pages: a resume re-reads at most that many, and a page read again
            # announces nothing again (its fingerprints were stored with their events).
            if not next_token or self.counts["pages"] % CHECKPOINT_PAGES == 0:
                self.checkpoint()
        self._flush()
        seen = load_seen(self.sync_id, int(self.state.pages or 0))
        manifest = self._manifest()
        vanished = sorted(u for u, entry in manifest.items() if entry.listed and u not in seen)
        for done, client_uuid in enumerate(vanished, start=1):
            try:
                client = self._call(partial(XpmClient.get_client, uuid=client_uuid))
            except XpmNotFound:
                self._apply_deleted([client_uuid])
            else:
                self._apply([client])
            if done % 25 == 0:
                self.checkpoint()

    def _full_list(self) -> None:
        clients = self._call(lambda c: c.list_clients())
        self._apply(clients)
        self.checkpoint()  # written, so the manifest below is complete
        listed = {str(c["uuid"]) for c in clients}
        gone = [u for u, entry in self._manifest().items() if entry.flag != DELETED and u not in listed]
        self._apply_deleted(sorted(gone))

    def _modified_since(self) -> None:
        since = datetime.fromtimestamp(float(self.state.watermark or 0), tz=UTC)
        self._apply(self._call(lambda c: c.list_clients(modified_since=since)))
        self.checkpoint()

    # -- one XPM call -------------------------------------------------------------------------
    def _call(self, operation: Callable[[XpmClient], T]) -> T:
        self.pacer.before_call()
        self.counts["xpm_calls"] += 1
        try:
            result = self.xpm.call(operation)
        except XpmRateLimited as limited:
            raise Defer(
                float(limited.retry_after), f"rate_limited:{limited.problem or 'unknown'}"
            ) from limited
        finally:
            self.pacer.observe(self.xpm.client.last_rate_headers)
        self.counts.pop("transient_failures", None)  # "in a row": a good answer resets it
        return result

    # -- comparing and writing ----------------------------------------------------------------
    def _manifest(self) -> Manifest:
        assert self.manifest is not None
        return self.manifest

    def _apply(self, clients: list[dict[str, Any]]) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for client in clients:
            snapshot = snapshot_of(client)
            if snapshot["uuid"]:
                latest[str(snapshot["uuid"])] = snapshot
        items = list(latest.items())
        for start in range(0, len(items), CHUNK):
            self._apply_chunk(items[start : start + CHUNK])

    def _apply_chunk(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        manifest = self._manifest()
        self.counts["fetched"] += len(items)
        candidates: list[tuple[str, dict[str, Any], str, Entry | None]] = []
        for client_uuid, snapshot in items:
            fp = fingerprint(snapshot)
            previous = manifest.get(client_uuid)
            if previous is not None and previous.fingerprint == fp:
                self.counts["unchanged"] += 1
                continue
            candidates.append((client_uuid, snapshot, fp, previous))
        if self.initial:
            write_baseline(manifest, [self._change(*c, None) for c in candidates], self._clock())
            return
        for client_uuid, snapshot, fp, previous in candidates:
            self._pending[client_uuid] = (snapshot, fp, previous)
        if len(self._pending) >= FLUSH_AT:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        before = old_snapshots(self.tenant_key, [u for u, (_, _, prev) in pending.items() if prev])
        changes = [self._change(u, s, fp, prev, before.get(u)) for u, (s, fp, prev) in pending.items()]
        write_changes(self._manifest(), self.vendor_id, changes, self._clock())

    def _apply_deleted(self, uuids: list[str]) -> None:
        """Clients XPM no longer has: the last snapshot, marked deleted."""
        self._flush_pending()
        manifest = self._manifest()
        doomed = [u for u in uuids if (e := manifest.get(u)) is not None and e.flag != DELETED]
        for start in range(0, len(doomed), CHUNK):
            chunk = doomed[start : start + CHUNK]
            before = old_snapshots(self.tenant_key, chunk)
            changes = []
            for client_uuid in chunk:
                old = before.get(client_uuid) or snapshot_of({"uuid": client_uuid})
                snapshot = {**old, "is_deleted": True}
                changes.append(
                    self._change(client_uuid, snapshot, fingerprint(snapshot), manifest.get(client_uuid), old)
                )
            self._write(changes)

    def _change(
        self,
        client_uuid: str,
        snapshot: dict[str, Any],
        fp: str,
        previous: Entry | None,
        before: dict[str, Any] | None,
    ) -> Change:
        flag = flag_of(snapshot)
        entry = Entry(fp, (previous.version + 1) if previous else 1, flag)
        data: dict[str, Any] = {
            "tenant_ref": self.tenant_ref,
            "client_uuid": client_uuid,
            "version": entry.version,
            "sync_id": self.sync_id,
        }
        if previous is None:
            kind = "created"
        else:
            data["changed_fields"] = changed_fields(before or {}, snapshot)
            if flag == DELETED and previous.flag != DELETED:
                kind, data["deleted"] = "archived", True
            elif flag != ACTIVE and previous.flag == ACTIVE:
                kind, data["deleted"] = "archived", False
            else:
                kind = "updated"
        self.counts["deleted" if data.get("deleted") else kind] += 1
        if self.initial:
            return Change(client_uuid, snapshot, entry, previous)
        return Change(client_uuid, snapshot, entry, previous, f"xpm.client.{kind}", data)

    def _write(self, changes: list[Change]) -> None:
        manifest = self._manifest()
        if self.initial:
            write_baseline(manifest, changes, self._clock())
        else:
            write_changes(manifest, self.vendor_id, changes, self._clock())
