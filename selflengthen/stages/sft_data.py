"""docs/method.md, step 6: supervised examples for both roles from the extended responses."""

from __future__ import annotations

import random

from selflengthen.config import RunConfig
from selflengthen.datasets import DatasetWriter, RecordStream, existing_dataset, input_checksum
from selflengthen.errors import DataError
from selflengthen.fingerprint import stage_fingerprint
from selflengthen.logs import stage_logger
from selflengthen.prompts import render_prompt
from selflengthen.records import ChatMessage, Response, SftExample, stable_id
from selflengthen.storage import get_storage, join_uri

STAGE = "sft-data"


def drop_lines(text: str, probability: float, rng: random.Random) -> str:
    """``text`` with each non-empty line dropped with ``probability`` (at least one line is kept)."""
    lines = text.split("\n")
    kept = [line for line in lines if not line.strip() or rng.random() >= probability]
    if not any(line.strip() for line in kept):
        kept = [next(line for line in lines if line.strip())]
    return "\n".join(kept).strip()


def sft_examples(response: Response, config: RunConfig, source: str = "input") -> tuple[SftExample, SftExample]:
    """(Generator example, Extender example) for one extended response read from ``source``."""
    if response.kind != "extended" or response.initial_text is None:
        raise DataError(
            f"{source}: record {response.id!r} is not an extended response with its initial text "
            f"(kind {response.kind!r}); sft-data reads the output of extend or select"
        )
    rng = random.Random(f"{config.seed}-{response.id}-dropout")
    answer = ChatMessage(role="assistant", content=response.text)
    generator = SftExample(
        id=stable_id(response.id, "generator"),
        role="generator",
        messages=[ChatMessage(role="user", content=response.query), answer],
        language=response.language,
        source_id=response.id,
        iteration=response.iteration,
    )
    draft = drop_lines(response.initial_text, config.sft_data.line_dropout, rng)
    prompt = render_prompt("extend", response.language, query=response.query, response=draft)
    extender = SftExample(
        id=stable_id(response.id, "extender"),
        role="extender",
        messages=[ChatMessage(role="user", content=prompt), answer],
        language=response.language,
        source_id=response.id,
        iteration=response.iteration,
    )
    return generator, extender


def run_sft_data(config: RunConfig, *, extended: str | list[str], output: str, iteration: int = 1) -> dict[str, str]:
    """Write ``output``/generator and ``output``/extender datasets; returns their URIs.

    One pass over the inputs, a part at a time, both datasets written as it goes; memory holds
    the ids read (duplicates across inputs are an error).

    ``extended`` may list several iterations' datasets (``sft_data.accumulate``); otherwise only the
    current iteration's is given.
    """
    storage = get_storage(config.storage)
    log = stage_logger(config.run_id, STAGE, iteration)
    sources = [extended] if isinstance(extended, str) else extended
    uris = {role: join_uri(output, role) for role in ("generator", "extender")}
    fingerprint = stage_fingerprint(
        config, sections=["sft_data", "seed"], inputs={uri: input_checksum(storage, uri) for uri in sources}
    )
    if all(existing_dataset(storage, uri, fingerprint, config.on_change) is not None for uri in uris.values()):
        log.info("already complete at %s; skipped", output)
        return uris
    storage.check_writable(output)
    writers = [
        DatasetWriter(storage, uri, stage=f"{STAGE}-{role}", fingerprint=fingerprint, shard_size=config.storage.shard_size)
        for role, uri in uris.items()
    ]
    origin: dict[str, str] = {}  # id -> the input holding it (ids are distinct within one input)
    for uri in sources:
        for response in RecordStream(storage, uri, Response):
            if response.id in origin:
                raise DataError(f"{uri}: duplicate id {response.id!r} (also in {origin[response.id]})")
            origin[response.id] = uri
            for writer, example in zip(writers, sft_examples(response, config, uri)):
                writer.add(example)
    for writer in writers:
        writer.close(metrics={"examples": len(origin), "sources": sources})
    log.info("%d examples per role from %s", len(origin), sources)
    return uris
