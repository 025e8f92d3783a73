"""Rotation: 10,000 due grants refreshed against the sandbox at a set app rate (achieved / set,
target >= 0.8), and the planner's read units for 100 vs 10,000 due grants out of 10,000.

Not measurable yet: the scheduled rotation job (issue 5) is not built (no planner schedule and
no worker in ``app.py``), so there is no planner to count and no job to pace. This module
reports that instead of a number; write the measurement here when issue 5 lands.
"""

from __future__ import annotations

from bench.context import RunContext
from bench.results import NotAvailable, Outcome

NAME = "rotation"
REASON = "scheduled rotation (issue 5) is not built yet"


def run(context: RunContext) -> list[Outcome]:
    return [
        NotAvailable(f"{NAME}.achieved_rate", REASON),
        NotAvailable(f"{NAME}.planner_read_units", f"{REASON} (no planner to count read units of)"),
    ]
