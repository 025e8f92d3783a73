"""What a benchmark reports: a measured ratio against its baseline, or why it cannot run yet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """An upper (or lower) bound on one reported number: the ratio or one of the metrics."""

    metric: str  # "ratio", or a key of Result.metrics
    limit: float
    label: str  # how the table shows it, e.g. "<= 1.3x"
    at_most: bool = True

    def met_by(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "limit": self.limit, "at_most": self.at_most, "label": self.label}


@dataclass(frozen=True)
class Result:
    """One table line. Times are per unit of work (one request, one parse, one interpreter)."""

    name: str
    ratio: float
    target: Target | None
    median_seconds: float | None
    baseline_median_seconds: float | None
    spread: float | None
    rounds: int
    parameters: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    round_ratios: list[float] = field(default_factory=list)  # the values the median and spread summarise

    @property
    def target_value(self) -> float | None:
        if self.target is None:
            return None
        if self.target.metric == "ratio":
            return self.ratio
        return float(self.metrics[self.target.metric])

    @property
    def verdict(self) -> str:
        value = self.target_value
        if self.target is None or value is None:
            return "reported"
        return "met" if self.target.met_by(value) else "MISSED"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ratio": self.ratio,
            "target": self.target.to_json() if self.target else None,
            "target_value": self.target_value,
            "verdict": self.verdict,
            "median_seconds": self.median_seconds,
            "baseline_median_seconds": self.baseline_median_seconds,
            "spread": self.spread,
            "rounds": self.rounds,
            "round_ratios": [round(r, 4) for r in self.round_ratios],
            "parameters": self.parameters,
            "metrics": self.metrics,
            "note": self.note,
        }


@dataclass(frozen=True)
class NotAvailable:
    """A benchmark the code cannot run yet: reported with its reason, never with a number."""

    name: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


Outcome = Result | NotAvailable
