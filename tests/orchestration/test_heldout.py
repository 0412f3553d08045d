"""The packaged held-out queries."""

import pytest

from selflengthen.datasets import read_manifest, read_records
from selflengthen.errors import DataError
from selflengthen.orchestration.heldout import ensure_heldout_queries, heldout_queries, packaged_heldout
from selflengthen.prompts import packaged_seeds
from selflengthen.records import Query
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
