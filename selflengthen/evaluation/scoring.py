"""Length-following scores on a 0-100 scale (docs/method.md, "Evaluation").

- LonGen: interval [a, b] from the constraint; a length L scores 1 inside, max(2L/a - 1, 0) below a,
  max(3 - 2L/b, 0) above b (Self-Lengthen counter); reported as 100 x the mean, overall and per
  type, language and range.
- LongBench-Write and LongWrite-Ruler: S_l from the required length l and the output length l'
  (LongBench-Write counter); reported overall and per bucket of l.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from selflengthen.evaluation.benchmarks import LonGenPrediction, LongBenchPrediction
from selflengthen.evaluation.constraints import CONSTRAINT_TYPES, LengthConstraint
from selflengthen.text import count_words

# Buckets of the required length l: [0,500), [500,2k), [2k,4k), [4k,20k]; LongWrite-Ruler also asks
# for more than 20k, which gets a bucket of its own.
BUCKETS = ("[0,500)", "[500,2k)", "[2k,4k)", "[4k,20k]", "(20k,inf)")
_EXCLUSIVE_UPPER = (500, 2000, 4000)
_LAST_CLOSED_UPPER = 20000


def longen_score(length: int, constraint: LengthConstraint) -> float:
    """The LonGen score of an output of ``length`` words, in [0, 1]."""
    low, high = constraint.interval()
    if length < low:
        return max(2 * length / low - 1, 0.0)
    if length > high:
        return max(3 - 2 * length / high, 0.0)
    return 1.0


def longbench_score(required: int, length: int) -> float:
    """S_l of an output of ``length`` for a required length, in [0, 100]; an empty output scores 0."""
    if length <= 0:
        return 0.0
    if length > required:
        return 100 * max(0.0, 1 - (length / required - 1) / 3)
    return 100 * max(0.0, 1 - (required / length - 1) / 2)


def length_bucket(required: int) -> str:
    for name, upper in zip(BUCKETS, _EXCLUSIVE_UPPER):
        if required < upper:
            return name
    return BUCKETS[3] if required <= _LAST_CLOSED_UPPER else BUCKETS[4]


@dataclass
class LengthReport:
    """The scores of one prediction file: ``summary`` (JSON-able) and one entry per prompt."""

    summary: dict[str, Any]
    prompts: list[dict[str, Any]] = field(default_factory=list)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _summarize(prompts: Sequence[dict[str, Any]], breakdowns: dict[str, tuple[str, Sequence[str]]]) -> dict[str, Any]:
    """``overall`` and, per breakdown name, the mean score of each group (known groups first, in order)."""
    summary: dict[str, Any] = {"overall": _mean(p["score"] for p in prompts), "count": len(prompts)}
    for name, (key, order) in breakdowns.items():
        groups: dict[str, list[float]] = defaultdict(list)
        for prompt in prompts:
            if prompt.get(key) is not None:
                groups[prompt[key]].append(prompt["score"])
        ranked = sorted(groups, key=lambda g: (order.index(g) if g in order else len(order), g))
        summary[name] = {group: _mean(groups[group]) for group in ranked}
    return summary


def score_longen(predictions: Sequence[LonGenPrediction]) -> LengthReport:
    prompts = []
    for index, prediction in enumerate(predictions):
        constraint = prediction.length_constraint
        length = count_words(prediction.response, "selflengthen")
        low, high = constraint.interval()
        prompts.append(
            {
                "index": index,
                "type": constraint.type,
                "language": prediction.language,
                "range": prediction.range,
                "interval": [low, high],
                "length": length,
                "score": 100 * longen_score(length, constraint),
            }
        )
    breakdowns = {"by_type": ("type", CONSTRAINT_TYPES), "by_language": ("language", ()), "by_range": ("range", ())}
    return LengthReport(_summarize(prompts, breakdowns), prompts)


def score_longbench(predictions: Sequence[LongBenchPrediction]) -> LengthReport:
    prompts = []
    for index, prediction in enumerate(predictions):
        length = count_words(prediction.response, "longbench")
        prompts.append(
            {
                "index": index,
                "required": prediction.length,
                "bucket": length_bucket(prediction.length),
                "length": length,
                "score": longbench_score(prediction.length, length),
            }
        )
    breakdowns = {"by_bucket": ("bucket", BUCKETS)}
    return LengthReport(_summarize(prompts, breakdowns), prompts)


def score_length(benchmark: str, predictions: Sequence[LonGenPrediction | LongBenchPrediction]) -> LengthReport:
    """The length-following report of ``benchmark`` (loaded by ``load_predictions``)."""
    if benchmark == "longen":
        return score_longen(predictions)  # type: ignore[arg-type]
    return score_longbench(predictions)  # type: ignore[arg-type]
