from __future__ import annotations

from chalicelib.resources import QUEUES, TABLES
from infra.template import build_merge_template


def test_template_declares_every_table_and_queue_from_the_one_definition() -> None:
    resources = build_merge_template("prod")["Resources"]
    tables = {
        r["Properties"]["TableName"]: r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"
    }
    assert set(tables) == {f"xpmb-prod-{t.name}" for t in TABLES}
    for table in TABLES:
        props = tables[f"xpmb-prod-{table.name}"]["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["KeySchema"][0]["AttributeName"] == table.hash_key.name
        if table.ttl_attribute:
            assert props["TimeToLiveSpecification"] == {"AttributeName": table.ttl_attribute, "Enabled": True}
    queues = {r["Properties"]["QueueName"]: r for r in resources.values() if r["Type"] == "AWS::SQS::Queue"}
    for queue in QUEUES:
        main = queues[f"xpmb-prod-{queue.name}"]["Properties"]
        assert main["RedrivePolicy"]["maxReceiveCount"] == queue.max_receive_count
        assert f"xpmb-prod-{queue.dlq_name}" in queues
    key = resources["TokenKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    assert resources["TokenKeyAlias"]["Properties"]["AliasName"] == "alias/xpmb-prod"
