"""Every stage from the CLI against a real OpenAI-compatible server serving the tiny model."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.config import load_config
from selflengthen.datasets import read_manifest, read_records
from selflengthen.records import Query, Response, SftExample
from selflengthen.storage import get_storage
from selflengthen.text import check_text

pytestmark = [pytest.mark.integration, pytest.mark.pretrained]
RUNNER = CliRunner()


@pytest.fixture
def config_path(tmp_path, pretrained_endpoint_config, tiny_model_dir):
    endpoint = pretrained_endpoint_config.model_dump(mode="json")
    data = {
        "run_id": "stages-test",
        "languages": ["en"],
        "model": {"base": str(tiny_model_dir)},
        "self_instruct": {"num_instructions": 4, "max_attempts_per_slot": 4,
                          "sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 96}},
        "generate": {"samples_per_query": 1, "max_retries": 4,
                     "sampling": {"max_tokens": 512}},
        "extend": {"attempts": 2, "rounds": 2, "sampling": {"max_tokens": 768}},
        "length_control": {"min_words": 20, "max_words": 4000, "unit": 100, "coarse_unit": 200},
        "serving": {"generator": endpoint, "extender": endpoint, "judge": endpoint},
        "storage": {"shard_size": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run(*args):
    result = RUNNER.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_stage_from_the_cli(tmp_path, config_path):
    config = load_config(config_path)
    storage = get_storage(config.storage)
    out = {name: str(tmp_path / name) for name in ("queries", "initial", "extended", "selected", "sft", "length")}

    summary = run("self-instruct", "--config", config_path, "--output", out["queries"])
    queries = read_records(storage, out["queries"], Query)
    assert summary["records"] == len(queries) > 0
    assert len({q.text for q in queries}) == len(queries)
    assert all(3 <= len(q.text.split()) <= 500 for q in queries)

    run("generate", "--config", config_path, "--input", out["queries"], "--output", out["initial"])
    initial = read_records(storage, out["initial"], Response)
    assert initial, "the tiny model answers at least one query"
    assert all(check_text(r.text, config.checks.en, r.finish_reason) is None for r in initial)
    assert {r.query_id for r in initial} <= {q.id for q in queries}

    summary = run("extend", "--config", config_path, "--input", out["initial"], "--output", out["extended"])
    extended = read_records(storage, out["extended"], Response)
    assert extended, summary
    for response in extended:
        assert response.words > 1.2 * response.initial_words
        assert response.rounds and any(r.accepted for r in response.rounds)

    run("select", "--config", config_path, "--input", out["extended"], "--output", out["selected"], "--set", "select.length_biased=false")
    assert read_manifest(storage, out["selected"]).count == len(extended)

    uris = run("sft-data", "--config", config_path, "--input", out["selected"], "--output", out["sft"])
    for role in ("generator", "extender"):
        examples = read_records(storage, uris[role], SftExample)
        assert len(examples) == len(extended) and all(e.role == role for e in examples)

    run("length-control", "--config", config_path, "--input", out["initial"], "--input", out["extended"], "--output", out["length"])
    examples = read_records(storage, out["length"], SftExample)
    assert examples
    for example in examples:
        constraint = example.meta["constraint"]
        assert constraint["text"] in example.messages[0].content or example.meta["llm_rewrite"]
