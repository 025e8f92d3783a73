"""The operator CLI ``xpm-broker`` (contract.md §3).

Works against the local stack (AWS_ENDPOINT_URL set) or AWS (XPMB_STAGE, XPMB_KMS_KEY_ID and
the usual AWS credentials), reading the same variables as the app.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chalicelib.errors import BrokerError


def _emit(args: argparse.Namespace, payload: dict[str, Any], lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload))
    else:
        print("\n".join(lines))


def _principal() -> str | None:
    """The AWS identity running the CLI (STS GetCallerIdentity), for the audit rows; best effort."""
    from chalicelib.aws import aws_client

    try:
        return str(aws_client("sts").get_caller_identity()["Arn"])
    except Exception:  # no STS answer must not stop the operator: the row then says "operator" only
        return None


def _dev(_: argparse.Namespace) -> int:
    from xpmb.devstack import run

    return run()


def _bootstrap(_: argparse.Namespace) -> int:
    from chalicelib.config import get_settings
    from xpmb.bootstrap import bootstrap

    report = bootstrap(get_settings())
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    return 0


def _vendors_create(args: argparse.Namespace) -> int:
    from chalicelib.tenants.vendors import create_vendor

    created = create_vendor(
        name=args.name,
        xero_client_id=args.xero_client_id,
        xero_client_secret=args.xero_client_secret,
        return_urls=args.return_url,
        webhook_url=args.webhook_url,
        scopes=args.scopes,
        require_mfa_attestation=args.require_mfa_attestation,
        allow_sensitive_fields=args.allow_sensitive_fields,
        principal=_principal(),
    )
    payload = {
        "vendor_id": created.vendor_id,
        "key_id": created.key.key_id,
        "key_secret": created.key.key_secret,
        "webhook_secret": created.webhook_secret,
    }
    _emit(
        args,
        payload,
        [
            f"vendor_id       {created.vendor_id}",
            f"key_id          {created.key.key_id}",
            f"key_secret      {created.key.key_secret}",
            f"webhook_secret  {created.webhook_secret}",
            "The secrets are shown once: store them in the vendor's secret manager now.",
        ],
    )
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    from chalicelib.tenants.vendors import rotate_key

    key = rotate_key(args.vendor_id, principal=_principal())
    payload = {"vendor_id": args.vendor_id, "key_id": key.key_id, "key_secret": key.key_secret}
    _emit(
        args,
        payload,
        [
            f"key_id      {key.key_id}",
            f"key_secret  {key.key_secret}",
            "The previous key stays valid until revoked: xpm-broker vendors keys revoke VENDOR_ID KEY_ID",
        ],
    )
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from chalicelib.tenants.vendors import revoke_key

    revoke_key(args.vendor_id, args.key_id, principal=_principal())
    _emit(
        args,
        {"vendor_id": args.vendor_id, "key_id": args.key_id, "status": "revoked"},
        [f"revoked {args.key_id}"],
    )
    return 0


def _tenants_list(args: argparse.Namespace) -> int:
    from chalicelib.tenants.vendors import list_tenants

    rows = list_tenants(args.vendor_id, args.status)
    if args.json:
        print(json.dumps([_tenant_row(c) for c in rows]))
        return 0
    if not rows:
        print("no tenants")
        return 0
    print(f"{'TENANT_REF':<32} {'STATUS':<24} {'PRACTICE':<40} XERO_TENANT_ID")
    for c in rows:
        print(f"{c.tenant_ref:<32} {c.status:<24} {(c.practice_name or '-'):<40} {c.xero_tenant_id or '-'}")
    return 0


def _tenant_row(connection: Any) -> dict[str, Any]:
    return {
        "tenant_ref": connection.tenant_ref,
        "status": connection.status,
        "practice_name": connection.practice_name,
        "xero_tenant_id": connection.xero_tenant_id,
        "connected_at": connection.connected_at,
    }


def _connections_rotate(args: argparse.Namespace) -> int:
    from xpmb.rotate import rotate_now

    summary = rotate_now(due_only=not args.all, dry_run=args.dry_run)
    _emit(args, summary.to_json(), summary.lines())
    return 0 if not summary.failed else 1


def _sync(args: argparse.Namespace) -> int:
    from xpmb.sync import sync_tenants

    summary = sync_tenants(args.tenants, enqueue=args.enqueue, max_wait=args.max_wait)
    _emit(args, summary.to_json(), summary.lines())
    return 0 if not summary.failed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpm-broker", description="Operate an xpm-broker deployment.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("dev", help="run the embedded local stack (what `make run` starts)").set_defaults(
        func=_dev
    )
    commands.add_parser(
        "bootstrap", help="create the tables, KMS key and queues (local stack: against AWS_ENDPOINT_URL)"
    ).set_defaults(func=_bootstrap)

    vendors = commands.add_parser("vendors", help="register vendors and manage their API keys")
    vendor_commands = vendors.add_subparsers(dest="vendors_command", required=True, metavar="COMMAND")
    create = vendor_commands.add_parser(
        "create", help="register a vendor; prints its key and webhook secret once"
    )
    create.add_argument("--name", required=True)
    create.add_argument("--xero-client-id", required=True)
    create.add_argument("--xero-client-secret", required=True)
    create.add_argument("--return-url", action="append", required=True, help="exact return URL (repeatable)")
    create.add_argument("--webhook-url")
    create.add_argument("--scopes", help="Xero scopes for this vendor's app (default: XPMB_XERO_SCOPES)")
    create.add_argument("--require-mfa-attestation", action="store_true")
    create.add_argument("--allow-sensitive-fields", action="store_true")
    create.add_argument("--json", action="store_true", help="emit one JSON object")
    create.set_defaults(func=_vendors_create)

    keys = vendor_commands.add_parser("keys", help="rotate or revoke a vendor's API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    rotate = key_commands.add_parser("rotate", help="issue a new key (the old one stays valid until revoked)")
    rotate.add_argument("vendor_id")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=_keys_rotate)
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("vendor_id")
    revoke.add_argument("key_id")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(func=_keys_revoke)

    tenants = commands.add_parser("tenants", help="inspect a vendor's tenants")
    tenant_commands = tenants.add_subparsers(dest="tenants_command", required=True, metavar="COMMAND")
    listing = tenant_commands.add_parser("list", help="list a vendor's tenants and their connection status")
    listing.add_argument("vendor_id")
    listing.add_argument("--status", choices=["active", "needs_reauthorisation", "revoked"])
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_tenants_list)

    connections = commands.add_parser("connections", help="operate on Xero connections (grants)")
    connection_commands = connections.add_subparsers(
        dest="connections_command", required=True, metavar="COMMAND"
    )
    rotate_grants = connection_commands.add_parser(
        "rotate", help="refresh grants now, in this process (no queue), with a progress line and a summary"
    )
    which = rotate_grants.add_mutually_exclusive_group()
    which.add_argument("--due", action="store_true", help="only grants due for rotation (the default)")
    which.add_argument("--all", action="store_true", help="every active grant, due or not")
    rotate_grants.add_argument("--dry-run", action="store_true", help="list what would be rotated")
    rotate_grants.add_argument("--json", action="store_true")
    rotate_grants.set_defaults(func=_connections_rotate)

    sync = commands.add_parser(
        "sync",
        help="sync practices' XPM clients now (change feed), in this process, with progress and a summary",
        description=(
            "Sync each TENANT's XPM client list now: fingerprints compared, xpm.client.* events for "
            "real changes, sync.completed at the end (docs/sync.md). A sync already queued or "
            "running for the tenant is joined, not doubled. Exit status 1 if any tenant failed."
        ),
    )
    sync.add_argument(
        "tenants", nargs="+", metavar="TENANT", help="VENDOR_ID/TENANT_REF (see `tenants list VENDOR_ID`)"
    )
    sync.add_argument("--enqueue", action="store_true", help="only queue the syncs for the SQS worker")
    sync.add_argument(
        "--max-wait",
        type=float,
        default=900.0,
        help="seconds to wait out rate limits in this process before handing the sync to the worker",
    )
    sync.add_argument("--json", action="store_true")
    sync.set_defaults(func=_sync)
    return parser


def main(argv: list[str] | None = None) -> int:
    from chalicelib.observability import metrics_muted

    args = build_parser().parse_args(argv)
    try:
        # EMF lines are for CloudWatch from Lambda; on an operator's terminal they would only
        # garble the output (and --json) of commands that refresh or sync.
        with metrics_muted():
            return int(args.func(args))
    except BrokerError as error:
        print(f"xpm-broker: {error.code}: {error.detail or error.title}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
