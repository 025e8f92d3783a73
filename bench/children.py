"""Fresh interpreters for the benchmarks that need one: run code, read its one-line JSON report.

Peak memory comes from ``VmHWM`` in ``/proc/self/status``, not ``ru_maxrss``: Linux carries
``ru_maxrss`` over fork and exec, so a child of a big parent would report the parent's peak
(seen here: a 10 MB child of a 300 MB parent reported 300 MB). ``VmHWM`` belongs to the
exec'd image only, and writing "5" to ``/proc/self/clear_refs`` resets it to the current RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]

# Prepended to child code: read the child's own memory figures (kB) from /proc.
MEMORY_HELPERS = """
def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no " + field + " in /proc/self/status")

def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass  # older kernels: the peak then also covers what ran before (still an upper bound)
"""


def run_child(code: str, *args: str, env: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """Wall seconds of ``python -c code args...`` (seen from here) and its last stdout line as JSON."""
    child_env = {k: v for k, v in os.environ.items() if k != "AWS_PROFILE"} | dict(env or {})
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_HELPERS + code, *args],
        check=False,
        cwd=PROJECT_DIR,
        env=child_env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{completed.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return wall, report
