"""Combine benchmark result files: a run of some benchmarks replaces their lines, keeps the rest.

``python -m bench.merge BASE UPDATE... [-o OUT]``: every line of an UPDATE replaces the lines of
BASE from the same benchmark (the name before the first dot); each line keeps its own
``git_revision`` and ``machine``, so a combined file says where every number came from. ``make
bench --merge`` does the same with the file it writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def benchmark_of(line: dict[str, Any]) -> str:
    return str(line["name"]).split(".", 1)[0]


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    replaced = {benchmark_of(line) for line in [*update["results"], *update["not_available"]]}
    merged = dict(update)
    for key in ("results", "not_available"):
        kept = [line for line in base.get(key, []) if benchmark_of(line) not in replaced]
        merged[key] = kept + list(update[key])
    merged["merged_from"] = sorted(
        {*base.get("merged_from", [base.get("generated_at")]), update["generated_at"]}
    )
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.merge")
    parser.add_argument("base", type=Path)
    parser.add_argument("updates", type=Path, nargs="+")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    combined = json.loads(args.base.read_text())
    for path in args.updates:
        combined = merge(combined, json.loads(path.read_text()))
    text = json.dumps(combined, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
