"""Length-following data: constraints derived from real response lengths, written into the query."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import Language, LengthControlConfig, RunConfig
from selflengthen.datasets import RecordStream, RecordStreams, input_checksum
from selflengthen.errors import RequestRefused
from selflengthen.prompts import render_prompt
from selflengthen.records import ChatMessage, Failure, Response, SftExample, stable_id
from selflengthen.stages.common import InputUnits, StageResult, run_units
from selflengthen.storage import get_storage
from selflengthen.text import count_words, detect_language

STAGE = "length-control"
_DIGITS = "零一二三四五六七八九"
_UNITS = ((10**8, "亿"), (10**4, "万"), (1000, "千"), (100, "百"), (10, "十"))


def to_chinese_numeral(number: int) -> str:
    """Chinese numerals for a non-negative integer (2500 -> 两千五百, 10000 -> 一万, 3005 -> 三千零五)."""
    if number < 0:
        raise ValueError("negative numbers are not written as lengths")
    if number < 10:
        return _DIGITS[number]
    text = ""
    rest = number
    pending_zero = False
    for value, unit in _UNITS:
        digit, rest = divmod(rest, value)
        if digit:
            prefix = to_chinese_numeral(digit) if digit >= 10 else _DIGITS[digit]
            if unit in "千百万亿" and prefix == "二" and not text:
                prefix = "两"
            if unit == "十" and digit == 1 and not text:
                prefix = ""
            text += ("零" if pending_zero else "") + prefix + unit
            pending_zero = False
        elif text:
            pending_zero = True
    if rest:
        text += ("零" if pending_zero else "") + _DIGITS[rest]
    return text


def derive_constraint(words: int, language: Language, settings: LengthControlConfig, rng: random.Random) -> dict:
    """A constraint that a response of length ``words`` satisfies: type, bounds and its wording.

    Bounds are multiples of the rounding unit (``unit``, or ``coarse_unit`` with its probability)
    clamped to [min_words, max_words]. "more than A" has A < words and "less than B" has B > words;
    when clamping makes a drawn type false for this length, "about" is used instead.
    """
    unit = settings.coarse_unit if rng.random() < settings.coarse_unit_probability else settings.unit
    low, high = settings.min_words, settings.max_words

    def clamp(value: int) -> int:
        return min(high, max(low, value))

    kinds = list(settings.type_probabilities)
    kind = rng.choices(kinds, weights=[settings.type_probabilities[k] for k in kinds])[0]
    n = clamp(round(words / unit) * unit)
    a = clamp((words - 1) // unit * unit if kind == "above" else words // unit * unit)
    b = clamp((words // unit + 1) * unit if kind == "below" else a + unit)
    holds = {"about": True, "range": a <= words <= b and a < b, "above": a < words, "below": words < b}
    if not holds[kind]:
        kind = "about"
    numerals = language == "zh" and rng.random() < settings.chinese_numeral_probability
    write = to_chinese_numeral if numerals else str
    phrase = settings.phrases[language][kind].format(n=write(n), a=write(a), b=write(b))
    return {"type": kind, "n": n, "a": a, "b": b, "unit": unit, "chinese_numerals": numerals, "text": phrase}


def mentions_constraint(query: str, constraint: dict) -> bool:
    """Whether a rewritten query still carries the constraint's numbers."""
    numbers = {"about": [constraint["n"]], "range": [constraint["a"], constraint["b"]]}.get(
        constraint["type"], [constraint["a"] if constraint["type"] == "above" else constraint["b"]]
    )
    write = to_chinese_numeral if constraint["chinese_numerals"] else str
    return all(write(value) in query or str(value) in query for value in numbers)


async def constrain_response(client: GenerationClient, config: RunConfig, response: Response) -> tuple[list, list]:
    """One length-constrained example; a rewrite the server refuses falls back to the appended constraint."""
    settings = config.length_control
    language = detect_language(response.text)
    rng = random.Random(f"{config.seed}-{response.id}-length")
    constraint = derive_constraint(response.words, language, settings, rng)
    query, rewritten = None, False
    if settings.rewrite_with_llm:
        prompt = render_prompt("length_rewrite", language, constraint=constraint["text"], query=response.query)
        try:
            (completion,) = await client.chat(
                [{"role": "user", "content": prompt}], seeded(settings.rewrite_sampling, STAGE, response.id)
            )
        except RequestRefused:
            completion = None
        if completion is not None and completion.finish_reason != "length" and mentions_constraint(completion.text.strip(), constraint):
            query, rewritten = completion.text.strip(), True
    if query is None:
        query = settings.phrases[language]["append"].format(query=response.query, constraint=constraint["text"])
    example = SftExample(
        id=stable_id(response.id, "length-control"),
        role="generator",
        messages=[ChatMessage(role="user", content=query), ChatMessage(role="assistant", content=response.text)],
        language=language,
        source_id=response.id,
        iteration=response.iteration,
        meta={"constraint": constraint, "llm_rewrite": rewritten, "words": response.words},
    )
    return [example], []


class LengthControlMetrics:
    """Examples per constraint type, and how many queries the model rewrote (the others got the constraint appended)."""

    def __init__(self) -> None:
        self.examples = self.rewritten = 0
        self.types: Counter[str] = Counter()

    def add(self, example: SftExample) -> None:
        self.examples += 1
        self.types[example.meta["constraint"]["type"]] += 1
        self.rewritten += bool(example.meta["llm_rewrite"])

    def result(self, failures: Sequence[Failure]) -> dict:
        return {"examples": self.examples, "types": dict(self.types), "llm_rewrites": self.rewritten, "appended": self.examples - self.rewritten}


def eligible(settings: LengthControlConfig):
    """``keep`` of :class:`~selflengthen.stages.common.InputUnits`: the ids of the responses within
    [min_words, max_words], the first of each distinct text (memory: an id and a text key each)."""

    def ids(responses: Iterable[Response]) -> set[str]:
        texts: set[str] = set()
        chosen: set[str] = set()
        for response in responses:
            if settings.min_words <= count_words(response.text) <= settings.max_words:
                key = stable_id(response.text)
                if key not in texts:
                    texts.add(key)
                    chosen.add(response.id)
        return chosen

    return ids


def run_length_control(config: RunConfig, *, responses: list[str], output: str) -> StageResult:
    """Length-constrained (query -> response) examples for the final SFT of the Generator, from
    the eligible responses of every dataset of ``responses`` (read a part at a time)."""
    storage = get_storage(config.storage)
    sources = RecordStreams([RecordStream(storage, uri, Response) for uri in responses])
    return run_units(
        config,
        stage=STAGE,
        role="generator",
        units=InputUnits(sources, eligible(config.length_control)),
        output_uri=output,
        output_model=SftExample,
        work=constrain_response,
        metrics=LengthControlMetrics,
        sections=["length_control", "seed"],
        inputs={uri: input_checksum(storage, uri) for uri in responses},
        storage=storage,
    )
