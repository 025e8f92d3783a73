"""``python -m bench [--quick] [--only NAME]``: run the benchmarks, print the table, write JSON.

Exits 0 whatever the verdicts (a missed target is a finding, reported in the table and the
JSON); non-zero only when a benchmark crashes, in which case no JSON is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from bench import (
    cold_start,
    proxy_overhead,
    rotation,
    signature_verification,
    sync,
    webhook_fanout,
    xml_mapping,
)
from bench.context import RunContext
from bench.report import RESULTS_DIR, table, write_json
from bench.results import Outcome

# Run order matters only for speed: xml_mapping reseeds the practice proxy_overhead searched.
BENCHMARKS: tuple[ModuleType, ...] = (
    cold_start,
    proxy_overhead,
    xml_mapping,
    rotation,
    webhook_fanout,
    signature_verification,
    sync,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [module.NAME for module in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run, not a result")
    parser.add_argument("--only", choices=names, action="append", help="run only this benchmark (repeatable)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="where to write the JSON results"
    )
    return parser.parse_args(argv)


def run_all(selected: list[ModuleType], context: RunContext, log: Callable[[str], None]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for module in selected:
        started = time.perf_counter()
        log(f"[bench] {module.NAME} ...")
        outcomes.extend(module.run(context))
        log(f"[bench] {module.NAME} done in {time.perf_counter() - started:.1f} s")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [m for m in BENCHMARKS if not args.only or m.NAME in args.only]
    context = RunContext(quick=args.quick)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        outcomes = run_all(selected, context, log)
    finally:
        context.close()
    print(table(outcomes))
    path = write_json(outcomes, quick=args.quick, path=args.output)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
