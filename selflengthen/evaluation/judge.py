"""Quality scores by an LLM judge (docs/method.md, "Evaluation").

Two rubrics, their prompts packaged under ``selflengthen/prompts/judge/``:
- ``longbench-write``: six dimensions scored 1-5, each reported as (mean - 1) x 25; S_q is their
  mean, and when the predictions carry their required ``length`` the headline is the mean of S_l
  and S_q;
- ``self-lengthen``: seven dimensions scored 1-10, reported as means on that scale.

The judge's answer is read leniently (a JSON object anywhere in the text, in a code fence, with
trailing commas or Python quoting, scores as numbers or numeric strings, keys in any case), and an
unreadable answer is asked again with the reason. A prompt that never gets a full set of scores is
counted as unscored, with its reason; it is never given a default score.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import EndpointConfig, SamplingConfig
from selflengthen.errors import RequestRefused
from selflengthen.evaluation.benchmarks import JudgeInput, RubricName
from selflengthen.evaluation.scoring import longbench_score
from selflengthen.text import count_words



@dataclass(frozen=True)
class Rubric:
    """Dimensions scored from ``low`` to ``high``. ``percent``: each is reported as
    (mean - low) / (high - low) x 100, else as the mean. ``with_length``: the headline averages S_l
    and S_q when the predictions carry their required length."""

    name: str
    dimensions: tuple[str, ...]
    low: int
    high: int
    percent: bool
    with_length: bool

    def prompt(self, request: str, response: str) -> str:
        return _template(self.name).format(query=request, response=response)

    def retry_prompt(self, problem: str) -> str:
        return _template("retry").format(
            problem=problem, low=self.low, high=self.high, dimensions=", ".join(self.dimensions)
        )

    def report(self, mean: float) -> float:
        return (mean - self.low) / (self.high - self.low) * 100 if self.percent else mean


RUBRICS: dict[RubricName, Rubric] = {
    "longbench-write": Rubric(
        "longbench-write",
        ("Relevance", "Accuracy", "Coherence", "Clarity", "Breadth and Depth", "Reading Experience"),
        low=1,
        high=5,
        percent=True,
        with_length=True,
    ),
    "self-lengthen": Rubric(
        "self-lengthen",
        ("Relevance", "Coherence", "Accuracy", "Consistency", "Clarity", "Creativity", "Engagement"),
        low=1,
        high=10,
        percent=False,
        with_length=False,
    ),
}


@cache
def _template(name: str) -> str:
    return (resources.files("selflengthen.prompts") / "judge" / f"{name}.txt").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- reading answers


class UnreadableAnswer(ValueError):
    """A judge answer without a complete, in-range set of scores; the message says what is wrong."""


_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_LEADING_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)")


def _key(name: str) -> str:
    """Dimension names compared loosely: "Breadth and Depth" == "breadth_and_depth" == "Breadth & Depth"."""
    return re.sub(r"[^a-z]", "", name.lower().replace("&", "and"))


def _load_object(fragment: str) -> dict | None:
    """``fragment`` as a dict: JSON (control characters allowed), without trailing commas, or a Python literal."""
    for attempt in (fragment, _TRAILING_COMMA.sub(r"\1", fragment)):
        try:
            value = json.loads(attempt, strict=False)
        except (ValueError, RecursionError):
            try:
                value = ast.literal_eval(attempt)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
        if isinstance(value, dict):
            return value
    return None


def _objects(text: str) -> list[dict]:
    """Every object in ``text``: for each "{", the shortest span up to a "}" that parses."""
    closes = [index for index, char in enumerate(text) if char == "}"]
    found = []
    for start in (index for index, char in enumerate(text) if char == "{"):
        for end in (index for index in closes if index > start):
            value = _load_object(text[start : end + 1])
            if value is not None:
                found.append(value)
                break
    return found


def _score_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and (match := _LEADING_NUMBER.match(value)):
        return float(match.group(1))
    return None


def _read_scores(candidate: dict, rubric: Rubric) -> dict[str, float]:
    by_key = {_key(str(name)): value for name, value in candidate.items()}
    missing = [d for d in rubric.dimensions if _key(d) not in by_key]
    if missing:
        raise UnreadableAnswer(f"no score for {', '.join(missing)}")
    scores = {}
    for dimension in rubric.dimensions:
        value = _score_value(by_key[_key(dimension)])
        if value is None or not rubric.low <= value <= rubric.high:
            raise UnreadableAnswer(
                f"{dimension} is {by_key[_key(dimension)]!r}, not a number from {rubric.low} to {rubric.high}"
            )
        scores[dimension] = value
    return scores


def extract_scores(answer: str, rubric: Rubric) -> dict[str, float]:
    """The scores in a judge's answer (the last object holding all of them); UnreadableAnswer if none."""
    problems = []
    for candidate in reversed(_objects(answer)):
        try:
            return _read_scores(candidate, rubric)
        except UnreadableAnswer as error:
            problems.append(str(error))
    raise UnreadableAnswer(problems[0] if problems else "no JSON object in the answer")


# ----------------------------------------------------------------------------- judging


@dataclass
class Verdict:
    """The judge's scores of one prediction, or why it went unscored (``reason`` and ``detail``)."""

    scores: dict[str, float] | None
    attempts: int
    reason: str | None = None
    detail: str | None = None
    answer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


async def judge_one(
    client: GenerationClient, rubric: Rubric, item: JudgeInput, sampling: SamplingConfig, retries: int, index: int = 0
) -> Verdict:
    """Ask the judge about one prediction; an unreadable answer is asked again up to ``retries`` times.

    A request the judge refuses leaves the prediction unscored with the refusal's reason
    (``prompt_too_long``, ``refused``); a judge that cannot be reached fails the evaluation.
    Each attempt has its own seed, from the configured one, the prediction's ``index`` and the attempt."""
    prompt = {"role": "user", "content": rubric.prompt(item.request, item.response)}
    messages = [prompt]
    answer = ""
    problem = ""
    for attempt in range(1, retries + 2):
        try:
            (completion,) = await client.chat(messages, seeded(sampling, "judge", rubric.name, index, attempt))
        except RequestRefused as error:
            return Verdict(None, attempt, error.reason, str(error))
        answer = completion.text
        try:
            return Verdict(extract_scores(answer, rubric), attempt)
        except UnreadableAnswer as error:
            problem = str(error)
        messages = [prompt, {"role": "assistant", "content": answer}, {"role": "user", "content": rubric.retry_prompt(problem)}]
    return Verdict(None, retries + 1, "unreadable", problem, answer)


async def judge_all(
    endpoint: EndpointConfig, rubric: Rubric, items: Sequence[JudgeInput], sampling: SamplingConfig, retries: int
) -> list[Verdict]:
    """Verdicts for every prediction, in order; the judge must answer a health check first."""
    async with GenerationClient(endpoint, role="judge") as client:
        await client.check_health()
        return list(await asyncio.gather(*(judge_one(client, rubric, item, sampling, retries, index) for index, item in enumerate(items))))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_quality(rubric: Rubric, items: Sequence[JudgeInput], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Per-dimension scores, S_q (their mean), S_l and the headline when lengths are known, and counts.

    ``overall`` is the mean of S_l and S_q for a ``with_length`` rubric over predictions that all
    carry a required ``length``; otherwise it is S_q. Scores are None when nothing was scored.
    """
    scored = [v.scores for v in verdicts if v.scores is not None]
    dimensions = {}
    for dimension in rubric.dimensions:
        mean = _mean([scores[dimension] for scores in scored])
        dimensions[dimension] = None if mean is None else rubric.report(mean)
    quality = _mean([value for value in dimensions.values() if value is not None])
    summary: dict[str, Any] = {
        "rubric": rubric.name,
        "count": len(verdicts),
        "scored": len(scored),
        "unscored": len(verdicts) - len(scored),
        "unscored_reasons": dict(Counter(v.reason for v in verdicts if v.scores is None)),
        "dimensions": dimensions,
        "S_q": quality,
        "overall": quality,
    }
    if rubric.with_length and items and all(item.length for item in items):
        length_score = _mean([longbench_score(item.length, count_words(item.response, "longbench")) for item in items])
        summary["S_l"] = length_score
        summary["overall"] = None if quality is None else (length_score + quality) / 2
    return summary
