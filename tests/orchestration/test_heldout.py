"""The packaged held-out queries."""

import pytest

from selflengthen.datasets import read_manifest, read_records
from selflengthen.errors import DataError
from selflengthen.orchestration.heldout import answer_heldout, ensure_heldout_queries, heldout_queries, packaged_heldout
from selflengthen.prompts import packaged_seeds
from selflengthen.records import Query, Response
from selflengthen.storage import get_storage
from selflengthen.text import detect_language
from tests.orchestration.helpers import run_config


@pytest.mark.parametrize("language", ["en", "zh"])
def test_packaged_set_is_in_its_language_and_apart_from_the_seeds(language: str) -> None:
    texts = packaged_heldout(language)
    assert len(texts) >= 8 and len(set(texts)) == len(texts)
    assert all(detect_language(text) == language for text in texts)
    assert not set(texts) & set(packaged_seeds(language))


def test_a_run_takes_the_first_queries_of_each_language_with_stable_ids() -> None:
    config = run_config("/runs", languages=["en", "zh"], report={"heldout_queries": 3})
    queries = heldout_queries(config)
    assert [q.language for q in queries] == ["en"] * 3 + ["zh"] * 3
    assert [q.text for q in queries[:3]] == packaged_heldout("en")[:3]
    assert {q.source for q in queries} == {"heldout"}
    assert [q.id for q in queries] == [q.id for q in heldout_queries(config)]


def test_asking_for_more_than_the_packaged_set_names_the_field() -> None:
    config = run_config("/runs", report={"heldout_queries": 500})
    with pytest.raises(DataError, match="report.heldout_queries"):
        heldout_queries(config)


def test_the_dataset_is_written_once(tmp_path) -> None:
    config = run_config(str(tmp_path), report={"heldout_queries": 2})
    storage = get_storage()
    uri = str(tmp_path / "heldout")
    ensure_heldout_queries(config, storage, uri)
    first = read_manifest(storage, uri).created_at
    ensure_heldout_queries(config, storage, uri)
    assert read_manifest(storage, uri).created_at == first
    assert len(read_records(storage, uri, Query)) == 2


@pytest.mark.integration
def test_every_answer_counts_truncated_ones_too(tmp_path, endpoint_config, served_model_dir) -> None:
    """Short max_tokens on an untrained model: answers are kept as they come, none retried."""
    config = run_config(
        str(tmp_path),
        model={"base": str(served_model_dir)},
        generate={"sampling": {"max_tokens": 8}},
        report={"heldout_queries": 2, "heldout_samples": 2},
        serving={"generator": endpoint_config.model_dump()},
    )
    result = answer_heldout(config, output=str(tmp_path / "answers"), generation=0)
    answers = read_records(get_storage(), str(tmp_path / "answers"), Response)
    assert len(answers) == 4 and {a.kind for a in answers} == {"heldout"}
    assert {(a.query_id, a.sample_index) for a in answers} == {(q.id, i) for q in heldout_queries(config) for i in range(2)}
    assert result.manifest.metrics["truncated"] == sum(a.finish_reason == "length" for a in answers) > 0
    assert result.manifest.metrics["lengths"]["count"] == 4


@pytest.mark.integration
def test_seeded_samples_differ_and_a_rerun_draws_the_same(tmp_path, endpoint_config, served_model_dir) -> None:
    """generate.sampling.seed set: the two samples of a query differ (seed + i each), and a second
    run into a fresh output gives the very same records."""
    config = run_config(
        str(tmp_path),
        model={"base": str(served_model_dir)},
        generate={"sampling": {"max_tokens": 12, "temperature": 1.0, "seed": 5}},
        report={"heldout_queries": 2, "heldout_samples": 2},
        # One request at a time: transformers serve seeds the global torch generator per request
        # (transformers/cli/serving/utils.py, set_torch_seed), so
        # concurrent requests would draw from each other's seeds (vLLM keeps a generator per request).
        serving={"generator": {**endpoint_config.model_dump(), "max_concurrency": 1}},
    )
    runs = []
    for name in ("first", "second"):
        answer_heldout(config, output=str(tmp_path / name), generation=0)
        runs.append(sorted(read_records(get_storage(), str(tmp_path / name), Response), key=lambda a: a.id))
    first, second = runs
    assert [a.model_dump() for a in first] == [a.model_dump() for a in second]
    by_query: dict[str, list[str]] = {}
    for answer in first:
        by_query.setdefault(answer.query_id, []).append(answer.text)
    assert all(len(set(texts)) == 2 for texts in by_query.values()), by_query
