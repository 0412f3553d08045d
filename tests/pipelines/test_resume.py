"""Killing `selflengthen run` and running it again with the same workdir continues the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selflengthen.datasets import CHECKPOINT_DIR, read_failures, read_manifest, read_records
from selflengthen.orchestration.layout import RunLayout
from selflengthen.orchestration.local import local_config
from selflengthen.orchestration.serving import ServerRecord
from selflengthen.records import Failure, Response
from selflengthen.storage import get_storage
from tests.pipelines.e2e_config import e2e_config

WAIT_S = 900


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert process.poll() is None, f"the run ended ({process.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {WAIT_S} s"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
@pytest.mark.pretrained
def test_a_killed_run_continues_from_finished_steps_and_checkpointed_records(tmp_path: Path, tiny_model_dir: Path) -> None:
    workdir = tmp_path / "run"
    # One record per checkpoint shard, so the unfinished step has checkpointed records when killed.
    config = e2e_config(tiny_model_dir, str(workdir), iterations=1, **{"eval.enabled": False, "length_control.extra_queries": 0, "storage.shard_size": 1})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config.to_yaml())
    command = [sys.executable, "-m", "selflengthen", "run", "--config", str(config_file), "--workdir", str(workdir)]
    layout = RunLayout(local_config(config, workdir))
    queries, initial = layout.iteration(1, "queries"), layout.iteration(1, "initial")

    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(Path(initial) / CHECKPOINT_DIR / "shard-00000.jsonl", first)
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # the CLI and the step it runs, as a crash would
            first.wait()
    storage = get_storage()
    finished_queries = read_manifest(storage, queries)
    checkpointed = json.loads((Path(initial) / CHECKPOINT_DIR / "shard-00000.jsonl").read_text().splitlines()[0])
    left_running = [ServerRecord.model_validate_json(storage.read_text(uri)).pid for uri in storage.list(layout.serving())]
    assert left_running and all(alive(pid) for pid in left_running)  # servers outlive a killed run

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "Lengths per iteration" in rerun.stdout
    # The finished self-instruct step was not run again; generation kept the records of the killed run.
    assert read_manifest(storage, queries).created_at == finished_queries.created_at
    kept = {r.id: r.text for r in read_records(storage, initial, Response)}
    kept.update({f.id: f.detail for f in read_failures(storage, initial, Failure)})
    assert checkpointed["outputs"] or checkpointed["failures"]
    for output in checkpointed["outputs"]:
        assert kept[output["id"]] == output["text"]
    for failure in checkpointed["failures"]:
        assert kept[failure["id"]] == failure["detail"]
    # The servers the killed run left were stopped, and the rerun's own too.
    assert not any(alive(pid) for pid in left_running)
    assert storage.list(layout.serving()) == []
    assert json.loads((workdir / "report.json").read_text())["iterations"][0]["iteration"] == 1
