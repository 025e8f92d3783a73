"""``python -m xpmb.local_aws --port N``: moto's server on 127.0.0.1 without per-request logs."""

from __future__ import annotations

import logging
import sys

from moto.server import main as moto_main


def main(argv: list[str] | None = None) -> int:
    # moto serves with werkzeug, which logs every request; the dev stack wants the errors only.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto_main(["-H", "127.0.0.1", *(argv if argv is not None else sys.argv[1:])])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
