"""Medians, spreads and percentiles (no numpy: the bench needs nothing beyond the project's own dependencies)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent: how far apart the repetitions were."""
        return 100.0 * (self.high - self.low) / self.median if self.median else math.nan

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n, "spread_pct": self.spread_pct}


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    return Summary(statistics.median(values), min(values), max(values), len(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the value at or below which ``pct`` percent of the samples lie."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def ratio(numerator: Summary | None, denominator: Summary | None) -> float | None:
    if numerator is None or denominator is None or not denominator.median:
        return None
    return numerator.median / denominator.median


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Summary | None:
    """Ratios repetition by repetition (the configurations are interleaved, so repetition i of each ran together)."""
    pairs = [a / b for a, b in zip(numerators, denominators, strict=False) if b]
    return summarize(pairs)
