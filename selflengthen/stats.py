"""Summary statistics reported per stage and per iteration, and the tallies that take them a record
at a time as a stage writes its dataset."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol


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


class Tally(Protocol):
    """Metrics of a dataset, taken one record at a time as it is written: memory holds what the
    tally keeps (counts, lengths), not the records."""

    def add(self, record: Any) -> None: ...

    def result(self, failures: Sequence[Any]) -> dict[str, Any]: ...


class Tallies:
    """Several tallies fed the same records; their results merged in order."""

    def __init__(self, *tallies: Tally):
        self.tallies = tallies

    def add(self, record: Any) -> None:
        for tally in self.tallies:
            tally.add(record)

    def result(self, failures: Sequence[Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for tally in self.tallies:
            merged.update(tally.result(failures))
        return merged


class Known:
    """Metrics known before any record is written (e.g. the number of units)."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def add(self, record: Any) -> None:
        pass

    def result(self, failures: Sequence[Any]) -> dict[str, Any]:
        return dict(self.values)


class FailureReasons:
    """``failure_reasons``: the failures counted per reason."""

    def add(self, record: Any) -> None:
        pass

    def result(self, failures: Sequence[Any]) -> dict[str, Any]:
        return {"failure_reasons": dict(Counter(failure.reason for failure in failures))}
