"""The fixed held-out queries that the Generator answers before and after each iteration.

The set is packaged (``selflengthen/prompts/<language>/heldout.jsonl``), disjoint from the seeds,
and never trained on; a run uses the first ``report.heldout_queries`` of each configured language.
Their answers, drawn with the Generator's own sampling settings, show how answer length moves from
one iteration to the next on the same questions.
"""

from __future__ import annotations

import json
from importlib import resources

from selflengthen.config import Language, RunConfig
from selflengthen.datasets import dataset_exists, write_records
from selflengthen.errors import DataError
from selflengthen.records import Query, stable_id
from selflengthen.storage import Storage

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
    if not dataset_exists(storage, uri):
        write_records(
            storage,
            uri,
            heldout_queries(config),
            stage="heldout-queries",
            config_hash=config.config_hash(),
            shard_size=config.storage.shard_size,
        )
    return uri
