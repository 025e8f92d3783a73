"""moto's server for the benchmarks, with a Query that reads only the matching partition.

moto 5 answers every Query by listing **and sorting** the whole table (``Table.all_items``) and then
filtering by the partition key: at 10,000 connections one ``Connection.by_grant`` Query costs about
0.3 s of the moto process, so a 10,000-grant rotation run measures moto, not the broker. DynamoDB
reads only the queried partition. ``install()`` narrows ``all_items`` to the items of the queried
partition (an unsorted pass over the table's dict, then moto's own sort, filters, paging and
projection on that small list), so a Query costs what it costs in DynamoDB: about its matches.
Results are moto's own: the same code runs on a subset that holds every match (tested in
``tests/unit/test_bench_fast_moto.py``). Scans and everything else are untouched.

moto's SQS is quadratic the same way: every SendMessage and every received message computes all
queue attributes, each a pass over every message that reads the clock per message, so queueing
and consuming 10,000 rotations costs moto tens of minutes. ``install()`` also reads the clock once
per pass and answers the retention check from the queue's own setting (same values).

Used by the benchmarks only (``python -m bench.fast_moto -p PORT``); tests and ``make run``
run moto as it is.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()
_originals: dict[str, Any] = {}


def install() -> None:
    """Patch moto's DynamoDB ``Table`` in this process (idempotent; ``uninstall`` undoes it)."""
    if _originals:
        return
    from moto.dynamodb.models.table import Table

    original_query = Table.query
    original_all_items = Table.all_items
    signature = inspect.signature(original_query)

    def all_items(self: Any) -> list[Any]:
        narrowed: tuple[Any, Callable[[Any], bool], list[Any]] | None = getattr(_local, "narrowed", None)
        if narrowed is None or narrowed[0] is not self:
            return original_all_items(self)
        _, keep, source = narrowed
        items = [item for item in source if keep(item)]
        return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, hash_key, *args, **kwargs).arguments  # moto passes most by position
        index_name = bound.get("index_name")
        conditions = bound.get("hash_key_conditions")
        if index_name:
            if not conditions:
                index = {i.name: i for i in self.all_indexes()}.get(index_name)
                if index is None or hash_key is None:
                    return original_query(self, hash_key, *args, **kwargs)
                attr = next(k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH")
                conditions = [(attr, hash_key)]
            pairs = list(conditions)

            def keep(item: Any) -> bool:
                for name, value in pairs:
                    found = item.attrs.get(name)
                    if found is None or found != value:
                        return False
                return True

            source = _flatten(self)
        else:
            if hash_key is None:
                return original_query(self, hash_key, *args, **kwargs)
            partition = self.items.get(hash_key)
            if partition is None:
                source = []
            elif self.range_key_attr:
                source = list(partition.values())
            else:
                source = [partition]

            def keep(item: Any) -> bool:
                return True

        _local.narrowed = (self, keep, source)
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            _local.narrowed = None

    _originals.update(query=original_query, all_items=original_all_items)
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    _install_sqs()


def _install_sqs() -> None:
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs.models import Queue, SQSBackend

    def not_visible(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    def delayed(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def messages(self: Any) -> list[Any]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    _originals.update(
        sqs_not_visible=Queue.approximate_number_of_messages_not_visible,
        sqs_delayed=Queue.approximate_number_of_messages_delayed,
        sqs_messages=Queue.messages,
        sqs_retained=SQSBackend.is_message_valid_based_on_retention_period,
    )
    Queue.approximate_number_of_messages_not_visible = property(not_visible)  # type: ignore[assignment,method-assign]
    Queue.approximate_number_of_messages_delayed = property(delayed)  # type: ignore[assignment,method-assign]
    Queue.messages = property(messages)  # type: ignore[assignment,method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]


def uninstall() -> None:
    if not _originals:
        return
    from moto.dynamodb.models.table import Table
    from moto.sqs.models import Queue, SQSBackend

    Table.query = _originals.pop("query")  # type: ignore[method-assign]
    Table.all_items = _originals.pop("all_items")  # type: ignore[method-assign]
    Queue.approximate_number_of_messages_not_visible = _originals.pop("sqs_not_visible")  # type: ignore[method-assign]
    Queue.approximate_number_of_messages_delayed = _originals.pop("sqs_delayed")  # type: ignore[method-assign]
    Queue.messages = _originals.pop("sqs_messages")  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = _originals.pop("sqs_retained")  # type: ignore[method-assign]


def _flatten(table: Any) -> list[Any]:
    if not table.range_key_attr:
        return list(table.items.values())
    return [item for partition in list(table.items.values()) for item in list(partition.values())]


def main(argv: list[str] | None = None) -> int:
    install()
    from xpmb.local_aws import main as serve

    return serve(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
