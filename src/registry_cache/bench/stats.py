"""Summary statistics for benchmark runs.

p95 is the **nearest-rank** percentile: sort the n values ascending and take the
one at rank ``ceil(0.95 * n)`` (1-based). It is always one of the measured values
(no interpolation); for n < 20 it is the maximum. The median is the middle value,
or the mean of the two middle values when n is even.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

P95_DEFINITION = "p95 = nearest-rank: the ceil(0.95*n)-th smallest value"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the ``ceil(pct/100 * n)``-th smallest value (rank ≥ 1)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(values)
    # round() first: 0.95 * 20 is 19.000000000000004 in binary floating point.
    rank = max(1, math.ceil(round(pct / 100 * len(ordered), 9)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    avg: float
    median: float
    p95: float
    min: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summary of no values")
    return Summary(
        count=len(values),
        avg=statistics.fmean(values),
        median=statistics.median(values),
        p95=percentile(values, 95),
        min=min(values),
        max=max(values),
    )


def speedup(upstream: float, cache: float, *, higher_is_better: bool) -> float | None:
    """How many times better the cache is: time ratio for durations, rate ratio for speeds."""
    num, den = (cache, upstream) if higher_is_better else (upstream, cache)
    if den <= 0:
        return None
    return num / den
