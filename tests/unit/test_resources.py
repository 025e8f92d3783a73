from __future__ import annotations

from chalicelib.resources import QUEUES, TABLES, queue_def, table_def


def test_names_are_unique_and_lookups_work() -> None:
    assert len({t.name for t in TABLES}) == len(TABLES)
    assert len({q.name for q in QUEUES}) == len(QUEUES)
    assert table_def("grants").hash_key.name == "grant_id"
    assert queue_def("rotation").dlq_name == "rotation-dlq"


def test_create_table_kwargs_declare_every_key_attribute_once() -> None:
    for table in TABLES:
        kwargs = table.create_table_kwargs(f"p-{table.name}")
        declared = [a["AttributeName"] for a in kwargs["AttributeDefinitions"]]
        assert len(declared) == len(set(declared)), table.name
        used = {k["AttributeName"] for k in kwargs["KeySchema"]}
        for index in kwargs.get("GlobalSecondaryIndexes", []):
            used |= {k["AttributeName"] for k in index["KeySchema"]}
        assert used == set(declared), table.name
        assert kwargs["BillingMode"] == "PAY_PER_REQUEST"


def test_rotation_index_is_queryable_by_time() -> None:
    # Issue 5 needs "a query on an index of next-rotation time" (never a scan).
    (index,) = table_def("grants").indexes
    assert index.range_key is not None
    assert index.range_key.type == "N"
