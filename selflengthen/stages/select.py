"""docs/method.md, steps 4-5: the checks, then seeded length-biased sampling of the survivors.

The same sampling thins the initial responses before extension (``select.length_biased_initial``,
applied by the extend stage), as the reference's ``drop_short`` does in
``qwen/step1_gen_initial_responses.py``."""

from __future__ import annotations

import random
from collections import Counter

from selflengthen.config import RunConfig, SelectConfig
from selflengthen.datasets import Manifest, existing_dataset, input_checksum, load_records, write_records
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


def length_biased_sample(responses: list[Response], settings: SelectConfig, seed: int) -> list[Response]:
    """Keep each response with the probability of its length rank; deterministic for a seed; in
    the order given.

    Responses are ranked by (words, id), within their language when ``rank_within_language``
    (words and Chinese characters are not one scale); the i-th shortest of n has rank 1 - i/n.
    Each record's draw depends only on the seed and its id, so a rerun keeps the same records.
    """
    groups: dict[str, list[Response]] = {}
    for response in responses:
        groups.setdefault(response.language if settings.rank_within_language else "all", []).append(response)
    kept_ids = set()
    for group in groups.values():
        ordered = sorted(group, key=lambda r: (r.words, r.id))
        for index, response in enumerate(ordered):
            rank = 1.0 - index / len(ordered)
            if random.Random(f"{seed}-{response.id}").random() < keep_probability(rank, settings):
                kept_ids.add(response.id)
    return [response for response in responses if response.id in kept_ids]


def select_responses(responses: list[Response], config: RunConfig, seed: int) -> tuple[list[Response], Counter[str]]:
    """The responses that pass the checks and survive length-biased sampling, and rejection counts per reason."""
    rejected: Counter[str] = Counter()
    passing = []
    for response in responses:
        reason = check_text(response.text, config.checks.for_language(response.language), response.finish_reason)
        if reason:
            rejected[reason] += 1
        else:
            passing.append(response)
    if not config.select.length_biased:
        return passing, rejected
    kept = length_biased_sample(passing, config.select, seed)
    rejected["length_biased_sampling"] = len(passing) - len(kept)
    return kept, rejected


def run_select(config: RunConfig, *, input: str, output: str, iteration: int = 1) -> Manifest:
    """Select from dataset ``input`` into ``output``; the manifest counts rejections per reason."""
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
    responses = load_records(storage, input, Response)
    storage.check_writable(output)
    kept, rejected = select_responses(responses, config, seed=config.seed * 1000 + iteration)
    metrics = {
        "input": len(responses),
        "kept": len(kept),
        "rejected": dict(rejected),
        "lengths_in": length_stats([r.words for r in responses]),
        "lengths_kept": length_stats([r.words for r in kept]),
    }
    manifest = write_records(
        storage, output, kept, stage=STAGE, fingerprint=fingerprint, shard_size=config.storage.shard_size, metrics=metrics
    )
    log.info("kept %d of %d: %s", len(kept), len(responses), dict(rejected))
    return manifest
