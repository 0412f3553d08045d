"""The fixed held-out queries that the Generator answers before and after each iteration.

The set is packaged (``selflengthen/prompts/<language>/heldout.jsonl``), disjoint from the seeds,
and never trained on; a run uses the first ``report.heldout_queries`` of each configured language.
Their answers, drawn with the Generator's own sampling settings, show how answer length moves from
one iteration to the next on the same questions. Every answer counts as it comes, truncated ones
too: a check-and-retry loop (as the generate stage has) would keep the short answers of a
Generator that has learnt to write past ``max_tokens`` and hide the very change being measured.
"""

from __future__ import annotations

import json
from importlib import resources

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import Language, RunConfig
from selflengthen.datasets import existing_dataset, write_records
from selflengthen.fingerprint import stage_fingerprint
from selflengthen.errors import DataError
from selflengthen.orchestration.layout import RunLayout
from selflengthen.records import Failure, Query, Response, stable_id
from selflengthen.stages.common import StageResult, TruncationMetrics, run_stage
from selflengthen.storage import Storage, get_storage
from selflengthen.text import count_words

STAGE = "heldout"

HELDOUT_FILE = "heldout.jsonl"


def packaged_heldout(language: Language) -> list[str]:
    """The packaged held-out queries of ``language``, in order."""
    resource = resources.files("selflengthen.prompts") / language / HELDOUT_FILE
    return [json.loads(line)["text"] for line in resource.read_text(encoding="utf-8").splitlines() if line.strip()]


def heldout_queries(config: RunConfig) -> list[Query]:
    """The run's held-out queries: the first ``report.heldout_queries`` of each language."""
    count = config.report.heldout_queries
    queries = []
    for language in config.languages:
        texts = packaged_heldout(language)
        if count > len(texts):
            raise DataError(
                f"report.heldout_queries is {count}, but the packaged held-out set holds {len(texts)} {language} queries"
            )
        queries += [
            Query(id=stable_id("heldout", language, index), text=text, language=language, source="heldout")
            for index, text in enumerate(texts[:count])
        ]
    return queries


def ensure_heldout_queries(config: RunConfig, storage: Storage, uri: str) -> str:
    """Write the run's held-out query dataset at ``uri`` unless it is there already; returns ``uri``."""
    fingerprint = stage_fingerprint(config, sections=["report.heldout_queries", "languages"])
    if existing_dataset(storage, uri, fingerprint, config.on_change) is None:
        write_records(
            storage,
            uri,
            heldout_queries(config),
            stage="heldout-queries",
            fingerprint=fingerprint,
            shard_size=config.storage.shard_size,
        )
    return uri


async def answer(client: GenerationClient, config: RunConfig, query: Query) -> tuple[list[Response], list[Failure]]:
    """``report.heldout_samples`` answers to ``query`` with the Generator's sampling, as they come
    (sample ``i`` seeded with the query's derived seed + i, see :mod:`selflengthen.client`)."""
    sampling = seeded(config.generate.sampling, STAGE, query.id)
    completions = await client.chat([{"role": "user", "content": query.text}], sampling, n=config.report.heldout_samples)
    answers = [
        Response(
            id=stable_id(query.id, STAGE, index),
            query_id=query.id,
            query=query.text,
            language=query.language,
            kind="heldout",
            sample_index=index,
            text=completion.text.strip(),
            words=count_words(completion.text),
            finish_reason=completion.finish_reason,
        )
        for index, completion in enumerate(completions)
    ]
    return answers, []


def answer_heldout(config: RunConfig, *, output: str, generation: int) -> StageResult:
    """The Generator (through ``serving.generator``) answers the run's held-out queries into ``output``."""
    queries = ensure_heldout_queries(config, get_storage(config.storage), RunLayout(config).heldout_queries())
    return run_stage(
        config,
        stage=STAGE,
        role="generator",
        input_uri=queries,
        input_model=Query,
        output_uri=output,
        output_model=Response,
        work=answer,
        metrics=lambda: TruncationMetrics("answers"),
        sections=["generate.sampling", "report.heldout_samples"],
        iteration=generation,
    )
