"""docs/method.md, step 1: new long-writing instructions by few-shot continuation of a chat turn, judged by the model."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import Language, RunConfig
from selflengthen.datasets import input_checksum, load_records
from selflengthen.errors import DataError
from selflengthen.prompts import is_affirmative, packaged_seeds, render_prompt, self_instruct_prompt
from selflengthen.records import Failure, Query, stable_id
from selflengthen.stages.common import StageResult, run_units
from selflengthen.storage import get_storage
from selflengthen.text import count_words, detect_language

STAGE = "self-instruct"
_NORMALIZE = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """The deduplication key of an instruction: case, spacing and punctuation ignored."""
    return _NORMALIZE.sub(" ", text.lower()).strip()


class InstructionPool:
    """Seeds plus accepted instructions per language, with the keys already taken (dedup).

    With ``grow`` accepted instructions join the few-shot examples; with ``reset_every`` the
    examples of a language go back to its seeds after that many accepted instructions (the
    reference restarts from its seeds every 500, QwenLM/Self-Lengthen ``qwen/step0_self_instruct.py``)."""

    def __init__(self, seeds: dict[Language, list[str]], grow: bool, reset_every: int = 0):
        self.seeds = {language: list(texts) for language, texts in seeds.items()}
        self.examples = {language: list(texts) for language, texts in seeds.items()}
        self.taken = {normalize(t) for texts in seeds.values() for t in texts}
        self.grow = grow
        self.reset_every = reset_every
        self.accepted = {language: 0 for language in seeds}

    def claim(self, text: str, language: Language) -> bool:
        """Take ``text`` if it is new; False for a duplicate."""
        key = normalize(text)
        if not key or key in self.taken:
            return False
        self.taken.add(key)
        self.accepted[language] += 1
        if self.reset_every and self.accepted[language] % self.reset_every == 0:
            self.examples[language] = list(self.seeds[language])
        elif self.grow:
            self.examples[language].append(text)
        return True


def load_seeds(config: RunConfig, seeds_uri: str | None) -> dict[Language, list[str]]:
    """Seed instructions per configured language, from ``seeds_uri`` (JSONL of Query-like rows) or the package."""
    seeds: dict[Language, list[str]] = {language: [] for language in config.languages}
    if seeds_uri is None:
        for language in config.languages:
            seeds[language] = list(packaged_seeds(language))
    else:
        for query in load_records(get_storage(config.storage), seeds_uri, Query):
            if query.language in seeds:
                seeds[query.language].append(query.text)
    for language, texts in seeds.items():
        if len(texts) < config.self_instruct.examples_per_prompt:
            raise DataError(
                f"seeds for language {language!r} hold {len(texts)} instructions; "
                f"self_instruct.examples_per_prompt needs at least {config.self_instruct.examples_per_prompt}"
            )
    return seeds


def candidate_text(completion: str, multi_line: bool) -> str:
    """The proposed instruction: the whole completion (the stop marker ends it), or its first line."""
    text = completion.strip()
    return text if multi_line or not text else text.split("\n", 1)[0].strip()


def make_slot_worker(pool: InstructionPool, iteration: int):
    """A unit worker filling one slot: up to max_attempts_per_slot proposals, judged and deduplicated."""

    async def fill_slot(client: GenerationClient, config: RunConfig, slot: tuple[Language, int]) -> tuple[list, list]:
        language, index = slot
        settings = config.self_instruct
        reason = "no_attempt"
        for attempt in range(1, settings.max_attempts_per_slot + 1):
            rng = random.Random(f"{config.seed}-{iteration}-{language}-{index}-{attempt}")
            examples = rng.sample(pool.examples[language], settings.examples_per_prompt)
            task, prefill, stop = self_instruct_prompt(examples, language)
            slot_key = (STAGE, config.run_id, iteration, language, index, attempt)
            sampling = seeded(settings.sampling, *slot_key).model_copy(update={"stop": [*settings.sampling.stop, stop]})
            (completion,) = await client.continue_chat([{"role": "user", "content": task}], prefill, sampling)
            candidate = candidate_text(completion.text, settings.multi_line)
            reason = _reject_reason(candidate, language, config)
            if reason is None:
                judge_prompt = render_prompt(
                    "judge_suitability", language, min_words=settings.judge_min_words, instruction=candidate
                )
                judge_sampling = seeded(settings.judge_sampling, *slot_key, "judge")
                (verdict,) = await client.chat([{"role": "user", "content": judge_prompt}], judge_sampling)
                if not is_affirmative(verdict.text, language, settings.judge_match):
                    reason = "judged_unsuitable"
                elif not pool.claim(candidate, language):
                    reason = "duplicate"
                else:
                    query = Query(
                        id=stable_id(config.run_id, iteration, language, index),
                        text=candidate,
                        language=language,
                        source="self-instruct",
                        iteration=iteration,
                        meta={"attempts": attempt},
                    )
                    return [query], []
        failure = Failure(
            id=stable_id(config.run_id, iteration, language, index, "failure"),
            stage=STAGE,
            reason=reason,
            attempts=settings.max_attempts_per_slot,
        )
        return [], [failure]

    return fill_slot


def _reject_reason(candidate: str, language: Language, config: RunConfig) -> str | None:
    settings = config.self_instruct
    if not candidate:
        return "empty"
    words = count_words(candidate)
    if words < settings.min_words:
        return "too_short"
    if words > settings.max_words:
        return "too_long"
    if detect_language(candidate) != language:
        return "wrong_language"
    return None


class SelfInstructMetrics:
    """Instructions accepted, slots left empty and why."""

    def __init__(self) -> None:
        self.instructions = 0

    def add(self, query: Query) -> None:
        self.instructions += 1

    def result(self, failures: Sequence[Failure]) -> dict:
        reasons = dict(Counter(failure.reason for failure in failures))
        return {"instructions": self.instructions, "empty_slots": len(failures), "empty_slot_reasons": reasons}


class Slots:
    """The stage's units: ``num_instructions`` slots (unit id, (language, index)), split evenly
    across the configured languages, made as they are read."""

    def __init__(self, config: RunConfig):
        self.languages = config.languages
        self.total = config.self_instruct.num_instructions

    def __iter__(self) -> Iterator[tuple[str, tuple[Language, int]]]:
        for i in range(self.total):
            language, index = self.languages[i % len(self.languages)], i // len(self.languages)
            yield f"{language}-{index:06d}", (language, index)

    def __len__(self) -> int:
        return self.total


def run_self_instruct(config: RunConfig, *, output: str, iteration: int = 1, seeds: str | None = None) -> StageResult:
    """Write ``self_instruct.num_instructions`` new, judged, deduplicated instructions to ``output``.

    ``seeds`` (or ``self_instruct.seeds_uri``, else the packaged seeds) is a JSONL of queries. On a
    resumed run, instructions accepted before the interruption are claimed first, so none repeats.
    """
    seeds_uri = seeds or config.self_instruct.seeds_uri
    seed_texts = load_seeds(config, seeds_uri)
    settings = config.self_instruct
    pool = InstructionPool(seed_texts, grow=settings.use_accepted_pool, reset_every=settings.pool_reset_every)
    return run_units(
        config,
        stage=STAGE,
        role="generator",
        units=Slots(config),
        output_uri=output,
        output_model=Query,
        work=make_slot_worker(pool, iteration),
        metrics=SelfInstructMetrics,
        sections=["self_instruct", "languages", "seed", "run_id"],
        inputs={seeds_uri: input_checksum(get_storage(config.storage), seeds_uri)} if seeds_uri else {},
        extra={"iteration": iteration},
        iteration=iteration,
        resume=lambda done: [pool.claim(query.text, query.language) for query in done],
    )
