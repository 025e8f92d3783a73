"""The operator CLI ``xpm-broker`` (contract.md §3)."""

from __future__ import annotations

import argparse
import sys


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpm-broker", description="Operate an xpm-broker deployment.")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run the embedded local stack (what `make run` starts)")
    dev.set_defaults(func=_dev)
    boot = commands.add_parser(
        "bootstrap", help="create the tables, KMS key and queues (local stack: against AWS_ENDPOINT_URL)"
    )
    boot.set_defaults(func=_bootstrap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
