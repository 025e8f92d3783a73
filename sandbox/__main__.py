"""``python -m sandbox``: run the Xero sandbox on 127.0.0.1 (the dev stack starts it this way)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from sandbox.server import SandboxServer
from sandbox.state import SandboxConfig, SandboxState


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("XPMB_SANDBOX_PORT", "8090")))
    parser.add_argument(
        "--clients",
        type=int,
        default=int(os.environ.get("XPMB_SANDBOX_CLIENTS", "200")),
        help="clients in the main seeded practice (default 200)",
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("XPMB_SANDBOX_SEED", "42")))
    args = parser.parse_args(argv)
    state = SandboxState(SandboxConfig(seed=args.seed, clients_per_practice=args.clients))
    server = SandboxServer(state, host=args.host, port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"xero sandbox listening on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
