"""docs/method.md, steps 4-5: the checks, then seeded length-biased sampling of the survivors.

The same sampling thins the initial responses before extension (``select.length_biased_initial``,
applied by the extend stage), as the reference's ``drop_short`` does in
``qwen/step1_gen_initial_responses.py``."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator

from selflengthen.config import RunConfig, SelectConfig
from selflengthen.datasets import Manifest, RecordStream, existing_dataset, input_checksum, write_records
from selflengthen.fingerprint import checks_sections, stage_fingerprint
from selflengthen.logs import stage_logger
from selflengthen.records import Response
from selflengthen.stats import length_stats
from selflengthen.storage import get_storage
from selflengthen.text import check_text

STAGE = "select"


def keep_probability(rank: float, settings: SelectConfig) -> float:
    """1 - coefficient * rank**exponent, clipped to [0, 1] (rank 1 = shortest, about 0 = longest)."""
    return min(1.0, max(0.0, 1.0 - settings.coefficient * rank**settings.exponent))


def lengths(responses: Iterable[Response]) -> Iterator[tuple[str, int, str]]:
    """(id, words, language) of each response: all that length-biased sampling reads."""
    return ((response.id, response.words, response.language) for response in responses)


def length_biased_ids(items: Iterable[tuple[str, int, str]], settings: SelectConfig, seed: int) -> set[str]:
    """The ids of the responses that length-biased sampling keeps, given each one's (id, words,
    language) (:func:`lengths`).

    Responses are ranked by (words, id), within their language when ``rank_within_language``
    (words and Chinese characters are not one scale); the i-th shortest of n has rank 1 - i/n.
    Each record's draw depends only on the seed and its id, so a rerun keeps the same records.
    """
    groups: dict[str, list[tuple[int, str]]] = {}
    for response_id, words, language in items:
        groups.setdefault(language if settings.rank_within_language else "all", []).append((words, response_id))
    kept_ids = set()
    for group in groups.values():
        group.sort()
        for index, (_, response_id) in enumerate(group):
            rank = 1.0 - index / len(group)
            if random.Random(f"{seed}-{response_id}").random() < keep_probability(rank, settings):
                kept_ids.add(response_id)
    return kept_ids


class Selection:
    """What selection keeps of some responses, from one pass that checks each response once and
    holds only its (id, words, language): ``kept_ids``, rejections per reason, and the metrics."""

    def __init__(self, responses: Iterable[Response], config: RunConfig, seed: int):
        self.rejected: Counter[str] = Counter()
        words_in: list[int] = []
        passing: list[tuple[str, int, str]] = []
        for response in responses:
            words_in.append(response.words)
            reason = check_text(response.text, config.checks.for_language(response.language), response.finish_reason)
            if reason:
                self.rejected[reason] += 1
            else:
                passing.append((response.id, response.words, response.language))
        if config.select.length_biased:
            self.kept_ids = length_biased_ids(passing, config.select, seed)
            self.rejected["length_biased_sampling"] = len(passing) - len(self.kept_ids)
        else:
            self.kept_ids = {response_id for response_id, _, _ in passing}
        self.metrics = {
            "input": len(words_in),
            "kept": len(self.kept_ids),
            "rejected": dict(self.rejected),
            "lengths_in": length_stats(words_in),
            "lengths_kept": length_stats([words for response_id, words, _ in passing if response_id in self.kept_ids]),
        }


def run_select(config: RunConfig, *, input: str, output: str, iteration: int = 1) -> Manifest:
    """Select from dataset ``input`` into ``output``; the manifest counts rejections per reason.

    Two passes over the input, a part at a time: the checks and the lengths (to rank: a
    :class:`Selection`), then the kept records are written; memory holds ids and lengths, not texts."""
    storage = get_storage(config.storage)
    log = stage_logger(config.run_id, STAGE, iteration)
    fingerprint = stage_fingerprint(
        config,
        sections=["select", *checks_sections(config), "seed"],
        inputs={input: input_checksum(storage, input)},
        extra={"iteration": iteration},
    )
    if (done := existing_dataset(storage, output, fingerprint, config.on_change)) is not None:
        log.info("already complete at %s (%d records); skipped", output, done.count)
        return done
    responses = RecordStream(storage, input, Response)
    storage.check_writable(output)
    selection = Selection(responses, config, seed=config.seed * 1000 + iteration)
    kept = (response for response in responses if response.id in selection.kept_ids)
    manifest = write_records(
        storage, output, kept, stage=STAGE, fingerprint=fingerprint, shard_size=config.storage.shard_size, metrics=selection.metrics
    )
    log.info("kept %d of %d: %s", manifest.count, selection.metrics["input"], dict(selection.rejected))
    return manifest
