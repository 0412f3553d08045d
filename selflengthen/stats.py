"""Summary statistics reported per stage and per iteration."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def length_stats(values: Sequence[int | float]) -> dict[str, float | int]:
    """count, mean, median, p90 and max of ``values`` (zeros when empty)."""
    if not values:
        return {"count": 0, "mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0}
    ordered = sorted(values)
    p90_index = max(0, min(len(ordered) - 1, round(0.9 * (len(ordered) - 1))))
    return {
        "count": len(ordered),
        "mean": round(statistics.fmean(ordered), 2),
        "median": float(statistics.median(ordered)),
        "p90": float(ordered[p90_index]),
        "max": ordered[-1],
    }
