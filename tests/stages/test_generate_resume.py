"""Killing the model server in the middle of `generate`, restarting it and rerunning the stage
answers each query exactly once."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from selflengthen.config import LocalServerConfig
from selflengthen.datasets import load_records, read_failures, read_records
from selflengthen.records import Failure, Query, Response
from selflengthen.serving import start_local_server, stop_local_server
from selflengthen.storage import get_storage

pytestmark = pytest.mark.integration
QUERIES = 12


def write_config(path, served_model_dir, handle):
    endpoint = {"base_url": handle.base_url, "model": handle.model, "max_concurrency": 2, "max_retries": 1,
                "backoff_initial_s": 0.1, "server_supports_n": False, "chat_template_continuation": False}
    data = {
        "run_id": "resume-test",
        "languages": ["en"],
        "model": {"base": str(served_model_dir)},
        "generate": {"samples_per_query": 1, "max_retries": 1, "sampling": {"max_tokens": 48}},
        "serving": {"generator": endpoint},
        "storage": {"shard_size": 2},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_kill_server_mid_generate_then_resume(tmp_path, served_model_dir):
    queries = tmp_path / "queries.jsonl"
    topics = ["rivers", "mountains", "cities", "music", "bread", "trains", "forests", "letters", "oceans", "gardens", "clocks", "bridges"]
    queries.write_text(
        "".join(json.dumps({"id": f"q{i}", "text": f"Write an essay about {t}.", "language": "en"}) + "\n" for i, t in enumerate(topics)),
        encoding="utf-8",
    )
    output = tmp_path / "initial"
    config = tmp_path / "config.yaml"
    server_config = LocalServerConfig(startup_timeout_s=180)
    handle = start_local_server(str(served_model_dir), "tiny", server_config)
    write_config(config, served_model_dir, handle)
    command = [sys.executable, "-m", "selflengthen", "generate", "--config", str(config), "--input", str(queries), "--output", str(output)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list((output / "_checkpoint").glob("shard-*.jsonl")):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no checkpoint shard within 300 s"
            time.sleep(0.2)
    finally:
        stop_local_server(handle)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 2, stderr
    assert "error:" in stderr
    checkpointed = list((output / "_checkpoint").glob("shard-*.jsonl"))
    assert checkpointed and not (output / "manifest.json").exists()
    answered_first = sum(len(path.read_text().splitlines()) for path in checkpointed)
    assert 0 < answered_first < QUERIES

    handle = start_local_server(str(served_model_dir), "tiny", server_config)
    try:
        write_config(config, served_model_dir, handle)
        second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:
        stop_local_server(handle)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    storage = get_storage()
    responses = read_records(storage, str(output), Response)
    failures = read_failures(storage, str(output), Failure)
    answered = [r.query_id for r in responses] + [f.query_id for f in failures]
    # each query answered exactly once: one response or one given-up failure, never both, never twice
    assert sorted(answered) == sorted(q.id for q in load_records(storage, str(queries), Query))
    assert summary["records"] == len(responses) and summary["failures"] == len(failures)
