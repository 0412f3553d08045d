"""A query longer than the served model's context fails its own record, not the stage, against the
real ``transformers serve`` (which does not refuse it itself: it answers a 12k-token prompt to a
4096-token model, so the client refuses it before sending, from the model's tokenizer)."""

import json

import pytest

from selflengthen.datasets import read_failures, read_records
from selflengthen.records import Failure, Response
from selflengthen.stages.generate import run_generate
from selflengthen.storage import get_storage
from tests.orchestration.helpers import run_config

pytestmark = pytest.mark.integration


def test_a_prompt_too_long_for_the_model_fails_its_record_and_the_stage_completes(tmp_path, endpoint_config, served_model_dir):
    queries = tmp_path / "queries.jsonl"
    rows = [
        {"id": "short", "text": "Write about rivers.", "language": "en"},
        {"id": "huge", "text": " ".join(["word"] * 6000), "language": "en"},
        {"id": "also-short", "text": "Write about bridges.", "language": "en"},
    ]
    queries.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = run_config(
        str(tmp_path),
        model={"base": str(served_model_dir)},
        generate={"samples_per_query": 2, "max_retries": 0, "sampling": {"max_tokens": 8, "seed": 11}},
        serving={"generator": endpoint_config.model_dump()},
    )
    output = str(tmp_path / "initial")
    result = run_generate(config, queries=str(queries), output=output)

    storage = get_storage()
    failures = read_failures(storage, output, Failure)
    refused = [f for f in failures if f.query_id == "huge"]
    assert [f.reason for f in refused] == ["prompt_too_long"]
    assert "leaves no room for an answer" in refused[0].detail and "4096" in refused[0].detail
    # The short queries were answered (by an untrained model: truncated samples, given up as such).
    answered = {f.query_id for f in failures} | {r.query_id for r in read_records(storage, output, Response)}
    assert answered == {"short", "huge", "also-short"}
    assert result.metrics["failure_reasons"]["prompt_too_long"] == 1
    assert result.metrics["given_up_reasons"]["prompt_too_long"] == 1
    assert result.manifest.failures == len(failures)

    rerun = run_generate(config, queries=str(queries), output=output)
    assert rerun.skipped and rerun.manifest.failures == result.manifest.failures
