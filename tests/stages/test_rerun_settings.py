"""A stage rerun under changed settings: refused by default, recomputed with on_change: redo, never
mixed; the same settings skip or resume as before. Against a real OpenAI-compatible server."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.config import ChecksConfig
from selflengthen.datasets import CHECKPOINT_DIR, UnitCheckpoint, read_failures, read_manifest, read_records
from selflengthen.records import Failure, Response
from selflengthen.storage import get_storage

pytestmark = pytest.mark.integration
RUNNER = CliRunner()
TOPICS = ["rivers", "mountains", "bread", "trains"]


@pytest.fixture
def setup(tmp_path, endpoint_config, served_model_dir):
    queries = tmp_path / "queries.jsonl"
    lines = [json.dumps({"id": f"q{i}", "text": f"Write about {topic}.", "language": "en"}) for i, topic in enumerate(TOPICS)]
    queries.write_text("".join(line + "\n" for line in lines))
    # The untrained model writes random tokens: a stop at the first space ends its answers, and
    # only the empty-text and truncation checks apply, so most samples become responses.
    checks = ChecksConfig().en.model_copy(update={"check_ending": False, "check_repetition": False, "check_meta": False})
    data = {
        "run_id": "rerun-test",
        "languages": ["en"],
        "model": {"base": str(served_model_dir)},
        "generate": {"samples_per_query": 2, "max_retries": 3, "sampling": {"max_tokens": 24, "stop": [" ", "\n"]}},
        "checks": {"en": checks.model_dump(mode="json")},
        "serving": {"generator": endpoint_config.model_dump(mode="json")},
        "storage": {"shard_size": 2},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return config, queries


def generate(config, queries, output, *overrides):
    sets = [arg for item in overrides for arg in ("--set", item)]
    return RUNNER.invoke(app, ["generate", "--config", str(config), "--input", str(queries), "--output", str(output), *sets])


def answered(output):
    """(query id, sample index) of every response and given-up sample at ``output``."""
    storage = get_storage()
    responses = read_records(storage, str(output), Response)
    failures = read_failures(storage, str(output), Failure)
    return sorted((r.query_id, r.sample_index) for r in responses), len(failures)


def snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_finished_stage_rerun_with_a_changed_setting(setup, tmp_path) -> None:
    config, queries = setup
    output = tmp_path / "initial"
    assert generate(config, queries, output).exit_code == 0
    before = snapshot(output)
    old_digest = read_manifest(get_storage(), str(output)).fingerprint.digest

    same = generate(config, queries, output, "serving.generator.max_concurrency=1", "storage.shard_size=5")
    assert same.exit_code == 0 and json.loads(same.stdout)["skipped"] is True
    assert snapshot(output) == before

    refused = generate(config, queries, output, "generate.samples_per_query=1")
    assert refused.exit_code == 2
    message = refused.stderr
    assert message.startswith("error: ") and str(output) in message
    assert "generate.samples_per_query: 2 -> 1" in message
    assert "on_change: redo" in message and "another output or workdir" in message
    assert snapshot(output) == before

    redone = generate(config, queries, output, "generate.samples_per_query=1", "on_change=redo")
    assert redone.exit_code == 0, redone.output
    assert json.loads(redone.stdout)["skipped"] is False
    pairs, failures = answered(output)
    assert pairs and all(index == 0 for _, index in pairs) and len(pairs) + failures == len(TOPICS)
    manifest = read_manifest(get_storage(), str(output))
    assert manifest.fingerprint.digest != old_digest and manifest.fingerprint.settings["generate.samples_per_query"] == 1

    # The same query file with other content is another input.
    queries.write_text(queries.read_text().replace("bread", "cheese"))
    changed = generate(config, queries, output, "generate.samples_per_query=1")
    assert changed.exit_code == 2 and f"input {queries} changed" in changed.stderr


def test_partial_checkpoint_is_never_continued_under_changed_settings(setup, tmp_path) -> None:
    """A killed stage leaves checkpoint shards of two samples per query; a rerun with one sample
    per query is refused, and with redo keeps none of the old records."""
    config, queries = setup
    finished, output = tmp_path / "finished", tmp_path / "initial"
    assert generate(config, queries, finished).exit_code == 0
    storage = get_storage()
    old = read_manifest(storage, str(finished)).fingerprint
    checkpoint = UnitCheckpoint(storage, str(output), stage="generate", fingerprint=old, shard_size=1)
    assert checkpoint.open("refuse") is None
    records = read_records(storage, str(finished), Response)
    assert {(r.query_id, r.sample_index) for r in records} >= {("q0", 1), ("q1", 1)}
    for query_id in ("q0", "q1"):  # as the killed run left them
        checkpoint.add(query_id, [r for r in records if r.query_id == query_id])
    checkpoint.flush()
    left = snapshot(output / CHECKPOINT_DIR)

    refused = generate(config, queries, output, "generate.samples_per_query=1")
    assert refused.exit_code == 2 and "checkpoint" in refused.stderr and "generate.samples_per_query: 2 -> 1" in refused.stderr
    assert snapshot(output / CHECKPOINT_DIR) == left and not (output / "manifest.json").exists()

    redone = generate(config, queries, output, "generate.samples_per_query=1", "on_change=redo")
    assert redone.exit_code == 0, redone.output
    pairs, failures = answered(output)
    assert pairs and all(index == 0 for _, index in pairs) and len(pairs) + failures == len(TOPICS)
    assert ("q0", 1) not in pairs and ("q1", 1) not in pairs  # no record of the old settings survives
    assert read_manifest(storage, str(output)).fingerprint.settings["generate.samples_per_query"] == 1
    assert not (output / CHECKPOINT_DIR).exists()


def test_partial_checkpoint_with_the_same_settings_resumes(setup, tmp_path) -> None:
    config, queries = setup
    finished, output = tmp_path / "finished", tmp_path / "initial"
    assert generate(config, queries, finished).exit_code == 0
    storage = get_storage()
    records = read_records(storage, str(finished), Response)
    fingerprint = read_manifest(storage, str(finished)).fingerprint
    checkpoint = UnitCheckpoint(storage, str(output), stage="generate", fingerprint=fingerprint, shard_size=1)
    checkpoint.open("refuse")
    checkpoint.add("q0", [r for r in records if r.query_id == "q0"])
    checkpoint.flush()

    resumed = generate(config, queries, output)
    assert resumed.exit_code == 0, resumed.output
    kept = [r for r in read_records(storage, str(output), Response) if r.query_id == "q0"]
    assert kept and kept == [r for r in records if r.query_id == "q0"]  # continued, not asked again
    assert read_manifest(storage, str(output)).metrics["units"] == len(TOPICS)
