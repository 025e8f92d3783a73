"""Paired measurement: a baseline and a measured path, alternated in the same run, as ratios.

The machines are noisy (2 shared cores), so absolute times drift between runs and even within
one. Each round times the baseline and the measured path back to back (the order flips every
round so neither always runs "warm second"), and what is reported is the median of the
per-round ratios, with the interquartile range of those ratios over their median as the spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    """Per-round values of both paths (seconds, or any unit as long as both share it)."""

    baseline: list[float]
    measured: list[float]

    @property
    def rounds(self) -> int:
        return len(self.measured)

    @property
    def ratios(self) -> list[float]:
        return [m / b for m, b in zip(self.measured, self.baseline, strict=True)]

    @property
    def differences(self) -> list[float]:
        return [m - b for m, b in zip(self.measured, self.baseline, strict=True)]

    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    def median_difference(self) -> float:
        return statistics.median(self.differences)

    def spread(self) -> float | None:
        return relative_iqr(self.ratios)


def relative_iqr(values: list[float]) -> float | None:
    """Interquartile range over the median; None with fewer than two values."""
    if len(values) < 2:
        return None
    lower, _, upper = statistics.quantiles(values, n=4, method="inclusive")
    middle = statistics.median(values)
    return (upper - lower) / middle if middle else None


def alternate(rounds: int, baseline: Callable[[], float], measured: Callable[[], float]) -> Paired:
    """Run both ``rounds`` times, flipping the order each round; each call returns one value."""
    baseline_values: list[float] = []
    measured_values: list[float] = []
    for index in range(rounds):
        if index % 2 == 0:
            baseline_values.append(baseline())
            measured_values.append(measured())
        else:
            measured_values.append(measured())
            baseline_values.append(baseline())
    return Paired(baseline_values, measured_values)


def timed(operation: Callable[[], object]) -> float:
    """Seconds one call of ``operation`` took (perf_counter)."""
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def median_of(operation: Callable[[], float], repeat: int) -> float:
    """The median of ``repeat`` values ``operation`` returns (e.g. per-request seconds)."""
    return statistics.median(operation() for _ in range(repeat))
