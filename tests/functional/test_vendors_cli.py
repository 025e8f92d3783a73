"""The operator CLI against local AWS: vendors, keys, tenants; secrets stored only encrypted."""

from __future__ import annotations

import json

import boto3
import pytest

from chalicelib.audit import AuditRecord
from chalicelib.config import get_settings
from chalicelib.crypto import reset_cipher
from chalicelib.tenants.models import Connection, VendorKey
from chalicelib.tenants.vendors import active_keys, key_secret
from xpmb.bootstrap import bootstrap
from xpmb.cli import main


@pytest.fixture
def stack(local_aws: str) -> str:
    bootstrap(get_settings())
    reset_cipher()
    return local_aws


def _create(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, str]:
    code = main(
        [
            "vendors", "create", "--name", "Acme Docs", "--xero-client-id", "CLIENT-1",
            "--xero-client-secret", "xero-secret-canary-91", "--return-url", "https://acme.example/xero/done",
            "--json", *extra,
        ]
    )  # fmt: skip
    assert code == 0
    return dict(json.loads(capsys.readouterr().out))


def test_vendors_create_prints_secrets_once_and_stores_them_encrypted(
    stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    created = _create(capsys)
    assert created["vendor_id"].startswith("v_")
    assert created["key_id"].startswith("vk_")
    assert len(created["key_secret"]) >= 43
    assert created["webhook_secret"].startswith("whsec_")

    key = VendorKey.get(created["key_id"])
    assert key_secret(key) == created["key_secret"].encode()
    # No plaintext secret anywhere in any table.
    dynamodb = boto3.client("dynamodb", endpoint_url=stack)
    dump = ""
    for table in dynamodb.list_tables()["TableNames"]:
        dump += json.dumps(dynamodb.scan(TableName=table)["Items"])
    for secret in (created["key_secret"], created["webhook_secret"], "xero-secret-canary-91"):
        assert secret not in dump


def test_keys_rotate_allows_two_active_keys_then_revoke(
    stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    created = _create(capsys)
    vendor_id = created["vendor_id"]
    assert main(["vendors", "keys", "rotate", vendor_id, "--json"]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert {k.key_id for k in active_keys(vendor_id)} == {created["key_id"], rotated["key_id"]}

    assert main(["vendors", "keys", "rotate", vendor_id]) == 1
    assert "too_many_keys" in capsys.readouterr().err

    assert main(["vendors", "keys", "revoke", vendor_id, created["key_id"]]) == 0
    capsys.readouterr()
    assert {k.key_id for k in active_keys(vendor_id)} == {rotated["key_id"]}
    assert main(["vendors", "keys", "revoke", "v_other", rotated["key_id"]]) == 1
    assert "key_not_found" in capsys.readouterr().err


def _audit_rows(vendor_id: str) -> list[AuditRecord]:
    return list(AuditRecord.query(vendor_id, consistent_read=True))


def test_operator_actions_are_audited_without_secrets(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    created = _create(capsys, "--allow-sensitive-fields")
    vendor_id = created["vendor_id"]
    (row,) = _audit_rows(vendor_id)
    assert (row.action, row.actor, row.outcome, row.tenant_ref) == (
        "vendor.created",
        "operator",
        "success",
        None,
    )
    assert row.detail["key_id"] == created["key_id"]
    assert row.detail["allow_sensitive_fields"] is True
    assert row.detail["require_mfa_attestation"] is False
    assert row.detail["principal"].startswith("arn:aws:")  # who ran the CLI (STS GetCallerIdentity)

    assert main(["vendors", "keys", "rotate", vendor_id, "--json"]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert main(["vendors", "keys", "revoke", vendor_id, created["key_id"]]) == 0
    rows = _audit_rows(vendor_id)  # audit ids sort by time
    assert [(r.action, r.actor, r.outcome) for r in rows] == [
        ("vendor.created", "operator", "success"),
        ("vendor_key.issued", "operator", "success"),
        ("vendor_key.revoked", "operator", "success"),
    ]
    assert rows[1].detail["key_id"] == rotated["key_id"]
    assert sorted(rows[1].detail["active_keys"]) == sorted([created["key_id"], rotated["key_id"]])
    assert rows[2].detail["key_id"] == created["key_id"]
    revoked_at = VendorKey.get(created["key_id"]).revoked_at

    # Refused or no-op commands change nothing and add no row.
    assert main(["vendors", "keys", "revoke", vendor_id, created["key_id"]]) == 0
    assert VendorKey.get(created["key_id"]).revoked_at == revoked_at
    assert main(["vendors", "keys", "revoke", vendor_id, "vk_nobody"]) == 1
    assert main(["vendors", "keys", "rotate", vendor_id]) == 0
    assert main(["vendors", "keys", "rotate", vendor_id]) == 1  # too_many_keys
    capsys.readouterr()
    assert [r.action for r in _audit_rows(vendor_id)].count("vendor_key.issued") == 2
    assert len(_audit_rows(vendor_id)) == 4

    stored = json.dumps(
        [r.attribute_values | {"detail": r.detail.as_dict()} for r in _audit_rows(vendor_id)], default=str
    )
    for secret in (
        created["key_secret"],
        rotated["key_secret"],
        created["webhook_secret"],
        "xero-secret-canary-91",
    ):
        assert secret not in stored


def test_without_an_sts_answer_the_cli_still_acts_and_audits_the_operator(
    stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """STS refusing GetCallerIdentity (e.g. an SCP) must not block the operator."""
    from botocore.stub import Stubber

    from chalicelib.aws import aws_client

    vendor_id = _create(capsys)["vendor_id"]
    with Stubber(aws_client("sts")) as sts:
        sts.add_client_error("get_caller_identity", "AccessDenied", http_status_code=403)
        assert main(["vendors", "keys", "rotate", vendor_id, "--json"]) == 0
        sts.assert_no_pending_responses()
    key_id = json.loads(capsys.readouterr().out)["key_id"]
    row = _audit_rows(vendor_id)[-1]
    assert (row.action, row.actor, row.detail["key_id"]) == ("vendor_key.issued", "operator", key_id)
    assert "principal" not in row.detail


def test_bad_return_urls_are_refused(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    for url in (
        "http://acme.example/done",
        "https://user@acme.example/",
        "https://acme.example/#x",
        "ftp://x/",
    ):
        code = main(
            ["vendors", "create", "--name", "A", "--xero-client-id", "C", "--xero-client-secret", "S",
             "--return-url", url]
        )  # fmt: skip
        assert code == 1
        assert "invalid_url" in capsys.readouterr().err
    # Loopback http is allowed on the local stage (the demo page lives there).
    _create(capsys, "--return-url", "http://127.0.0.1:8000/demo")


def test_tenants_list_filters_by_status(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    vendor_id = _create(capsys)["vendor_id"]
    for ref, status in (("firm-1", "active"), ("firm-2", "needs_reauthorisation"), ("firm-3", "revoked")):
        Connection(vendor_id, ref, status=status, updated_at=1.0, practice_name=f"P {ref}").save()
    assert main(["tenants", "list", vendor_id, "--json"]) == 0
    assert {r["tenant_ref"] for r in json.loads(capsys.readouterr().out)} == {"firm-1", "firm-2", "firm-3"}
    assert main(["tenants", "list", vendor_id, "--status", "active", "--json"]) == 0
    assert [r["tenant_ref"] for r in json.loads(capsys.readouterr().out)] == ["firm-1"]
    assert main(["tenants", "list", vendor_id]) == 0
    assert "firm-2" in capsys.readouterr().out
    assert main(["tenants", "list", "v_nobody"]) == 1
    assert "vendor_not_found" in capsys.readouterr().err
