"""The change feed's pure parts: fingerprints, entries, the pacer, cursors, names, the interval."""

from __future__ import annotations

import base64
import json

import pytest

from chalicelib.config import build_settings
from chalicelib.errors import BrokerError, ConfigurationError
from chalicelib.sync.engine import Defer, Pacer
from chalicelib.sync.fingerprint import (
    SNAPSHOT_FIELDS,
    Entry,
    changed_fields,
    fingerprint,
    flag_of,
    snapshot_of,
)
from chalicelib.sync.listing import _decode_cursor, _encode_cursor, _limit, _since
from chalicelib.sync.models import FINGERPRINT_BUCKETS, bucket_of, sync_shard
from chalicelib.sync.store import Manifest, _unpack
from xpmb.sync import parse_tenant

CLIENT = {
    "uuid": "720c21d3-e812-4bb1-9d6b-ddeb4745e7b9",
    "name": "XYZ Australia",
    "email": "someone@example.com",
    "address": {
        "street": "1 High St",
        "city": "Wellington",
        "region": None,
        "post_code": None,
        "country": None,
    },
    "is_archived": False,
    "is_deleted": False,
    "tax_number": "123456789",
    "contacts": [{"name": "Sam"}],
}


def test_a_snapshot_keeps_summary_fields_only() -> None:
    snapshot = snapshot_of(CLIENT)
    assert tuple(snapshot) == SNAPSHOT_FIELDS
    assert "tax_number" not in snapshot and "contacts" not in snapshot
    assert snapshot["phone"] is None  # missing fields are None, so every listing compares alike


def test_the_fingerprint_ignores_key_order_and_non_summary_fields() -> None:
    reordered = dict(reversed(list(CLIENT.items())))
    assert fingerprint(snapshot_of(reordered)) == fingerprint(snapshot_of(CLIENT))
    other_tax = {**CLIENT, "tax_number": "987654321", "contacts": []}
    assert fingerprint(snapshot_of(other_tax)) == fingerprint(snapshot_of(CLIENT))
    nested = {**CLIENT, "address": {**CLIENT["address"], "city": "Auckland"}}  # type: ignore[dict-item]
    assert fingerprint(snapshot_of(nested)) != fingerprint(snapshot_of(CLIENT))
    assert len(fingerprint(snapshot_of(CLIENT))) == 16


def test_changed_fields_names_what_differs() -> None:
    before = snapshot_of(CLIENT)
    after = snapshot_of({**CLIENT, "email": "x@example.com", "is_archived": True})
    assert changed_fields(before, after) == ["email", "is_archived"]
    assert changed_fields(before, before) == []


@pytest.mark.parametrize(
    ("archived", "deleted", "flag"),
    [(False, False, "a"), (True, False, "r"), (True, True, "d"), (False, True, "d")],
)
def test_flags(archived: bool, deleted: bool, flag: str) -> None:
    assert flag_of({"is_archived": archived, "is_deleted": deleted}) == flag


def test_entries_round_trip_through_a_packed_bucket() -> None:
    manifest = Manifest("v#t#p")
    entry = Entry("0123456789abcdef", 3, "r")
    bucket = manifest.set(CLIENT["uuid"], entry)  # type: ignore[arg-type]
    assert Entry.decode(entry.encode()) == entry
    assert _unpack(manifest.packed(bucket)) == {CLIENT["uuid"]: entry.encode()}
    assert manifest.get(str(CLIENT["uuid"])) == entry and not entry.listed
    assert 0 <= bucket < FINGERPRINT_BUCKETS
    assert bucket_of(str(CLIENT["uuid"])) == bucket


def test_shards_are_stable() -> None:
    assert sync_shard("v_1", "firm-1") == sync_shard("v_1", "firm-1")
    assert {sync_shard("v_1", f"firm-{n}") for n in range(40)} == {"s0", "s1", "s2", "s3"}


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pacer_stops_at_the_deadline() -> None:
    clock = FakeMonotonic()
    pacer = Pacer(deadline=110.0, monotonic=clock)
    pacer.before_call()
    clock.now = 110.0
    with pytest.raises(Defer) as stopped:
        pacer.before_call()
    assert (stopped.value.delay, stopped.value.reason) == (0, "time")


def test_the_pacer_keeps_the_reserves_xero_reports() -> None:
    pacer = Pacer(minute_reserve=10, day_reserve=500)
    pacer.observe({"X-MinLimit-Remaining": "11", "X-DayLimit-Remaining": "4000"})
    pacer.before_call()
    pacer.observe({"X-MinLimit-Remaining": "10"})  # the day count stays what was last seen
    with pytest.raises(Defer) as minute:
        pacer.before_call()
    assert (minute.value.reason, minute.value.delay) == ("minute_budget", 60)
    pacer.observe({"X-MinLimit-Remaining": "59", "X-DayLimit-Remaining": "500"})
    with pytest.raises(Defer) as day:
        pacer.before_call()
    assert (day.value.reason, day.value.delay) == ("day_budget", 3600)
    pacer.observe({"X-MinLimit-Remaining": "garbage", "X-DayLimit-Remaining": "4000"})
    pacer.before_call()  # unreadable headers keep the previous value (59)


def test_limits_and_since() -> None:
    assert _limit(None) == 100 and _limit("500") == 500
    for bad in ("0", "501", "-1", "1.5", "ten"):
        with pytest.raises(BrokerError) as error:
            _limit(bad)
        assert error.value.code == "invalid_request"
    assert _since("2026-11-22T00:00:00Z") == 1795305600.0
    assert _since("2026-11-22T10:00:00+10:00") == 1795305600.0
    for bad in ("2026-11-22T00:00:00", "yesterday", ""):
        with pytest.raises(BrokerError):
            _since(bad)


KEY = {"tenant_key": {"S": "v#t#p"}, "client_uuid": {"S": "abc"}}


def _raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_cursors_round_trip_and_keep_their_filter() -> None:
    assert _decode_cursor(_encode_cursor(KEY, None), "v#t#p", None) == (KEY, None)
    index_key = {**KEY, "updated_at": {"N": "5"}}
    assert _decode_cursor(_encode_cursor(index_key, 4.0), "v#t#p", None) == (index_key, 4.0)
    assert _decode_cursor(_encode_cursor(index_key, 4.0), "v#t#p", 4.0) == (index_key, 4.0)


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        _raw([]),
        _raw({"k": KEY}),
        _raw({"k": KEY, "s": None, "x": 1}),
        _raw({"k": {**KEY, "tenant_key": {"S": "v#other#p"}}, "s": None}),
        _raw({"k": {"tenant_key": {"S": "v#t#p"}}, "s": None}),
        _raw({"k": KEY, "s": 4.0}),  # an updated_since cursor needs the index key
        _raw({"k": KEY, "s": "4"}),
        _raw({"k": {**KEY, "client_uuid": {"N": "1"}}, "s": None}),
    ],
)
def test_foreign_or_forged_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BrokerError) as error:
        _decode_cursor(cursor, "v#t#p", None)
    assert (error.value.code, error.value.status) == ("invalid_cursor", 422)


def test_a_cursor_of_another_filter_is_refused() -> None:
    index_key = {**KEY, "updated_at": {"N": "5"}}
    with pytest.raises(BrokerError):
        _decode_cursor(_encode_cursor(index_key, 4.0), "v#t#p", 3.0)


def test_cli_tenant_names() -> None:
    assert parse_tenant("v_abc/firm-1") == ("v_abc", "firm-1")
    for bad in ("v_abc", "/firm", "v_abc/", "v/a/b"):
        with pytest.raises(BrokerError):
            parse_tenant(bad)


def test_the_sync_interval_setting() -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    assert build_settings(env).sync_interval_seconds == 12 * 3600
    assert build_settings({**env, "XPMB_SYNC_INTERVAL_HOURS": "1.5"}).sync_interval_seconds == 5400
    for bad in ("0", "abc", "1000"):
        with pytest.raises(ConfigurationError):
            build_settings({**env, "XPMB_SYNC_INTERVAL_HOURS": bad})
