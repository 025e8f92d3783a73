"""The printed table and ``bench/results/latest.json``, with the machine and git revision."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.children import PROJECT_DIR
from bench.results import NotAvailable, Outcome, Result

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLUMNS = ("name", "ratio", "target", "median", "spread", "verdict")


def git_revision() -> str:
    """``git rev-parse HEAD`` of the project, or "unknown" without git or a repository."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = completed.stdout.strip()
    return revision if completed.returncode == 0 and revision else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
    }


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_bytes(count: float) -> str:
    return f"{count / (1024 * 1024):.1f} MiB"


def _median_cell(result: Result) -> str:
    if result.median_seconds is not None:
        return format_seconds(result.median_seconds)
    if "peak_bytes" in result.metrics:
        return format_bytes(result.metrics["peak_bytes"])
    return "-"


def _row(outcome: Outcome) -> tuple[str, ...]:
    if isinstance(outcome, NotAvailable):
        return (outcome.name, "-", "-", "-", "-", "not available")
    spread = "-" if outcome.spread is None else f"{outcome.spread * 100:.0f}%"
    target = outcome.target.label if outcome.target else "-"
    return (outcome.name, f"{outcome.ratio:.2f}x", target, _median_cell(outcome), spread, outcome.verdict)


def table(outcomes: list[Outcome]) -> str:
    """A fixed-width table, then one line per note and per unavailable benchmark."""
    rows = [COLUMNS, *(_row(o) for o in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [
        f"- {o.name}: {o.note}" if isinstance(o, Result) else f"- {o.name}: not available: {o.reason}"
        for o in outcomes
        if isinstance(o, NotAvailable) or o.note
    ]
    return "\n".join(line.rstrip() for line in lines) + ("\n\n" + "\n".join(notes) if notes else "")


def write_json(outcomes: list[Outcome], *, quick: bool, path: Path | None = None) -> Path:
    revision, host = git_revision(), machine()
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "git_revision": revision,
        "machine": host,
        "results": [
            {**o.to_json(), "git_revision": revision, "machine": host}
            for o in outcomes
            if isinstance(o, Result)
        ],
        "not_available": [o.to_json() for o in outcomes if isinstance(o, NotAvailable)],
    }
    target = path or RESULTS_DIR / "latest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n")
    return target
