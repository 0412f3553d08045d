"""The whole pipeline from the command line: 2 iterations on the tiny model under kfp.local, with S3
storage on a real SeaweedFS server, killed in the middle of its first generation step and run again.

One run serves both checks (the tiny model's run is the suite's longest part): the rerun must
continue from the finished steps and the checkpointed records, and the finished run must have
non-empty outputs at every stage, the report's fields and the method's effect on lengths.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selflengthen.datasets import CHECKPOINT_DIR, dataset_exists, read_failures, read_manifest, read_records
from selflengthen.orchestration.layout import EVALUATION_PHASE, FINAL_PHASE, RunLayout
from selflengthen.orchestration.local import local_config
from selflengthen.orchestration.serving import ServerRecord, teardown_run
from selflengthen.records import Failure, Response
from selflengthen.report import DISTRIBUTIONS, STATS
from selflengthen.storage import Storage, get_storage, join_uri
from selflengthen.training.output import read_trained_model
from tests.orchestration.helpers import alive
from tests.pipelines.e2e_config import e2e_config

WAIT_S = 900
ITERATION_DATASETS = ("queries", "initial", "extended", "selected", "sft/generator", "sft/extender")
FINAL_DATASETS = ("queries", "collected", "length-control")


def wait_for(storage: Storage, uri: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not storage.exists(uri):
        assert process.poll() is None, f"the run ended ({process.returncode}) before {uri} appeared"
        assert time.monotonic() < deadline, f"{uri} did not appear within {WAIT_S} s"
        time.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.pretrained
@pytest.mark.timeout(2400)  # about 13 minutes on 2 idle cores; the suite's 900 s limit is too tight under load
def test_two_iterations_on_s3_killed_and_resumed(tmp_path: Path, tiny_model_dir: Path, s3_server, s3_credentials_env) -> None:
    bucket = s3_server.create_bucket()
    # One record per checkpoint shard, so the step killed has checkpointed records.
    config = e2e_config(tiny_model_dir, f"s3://{bucket}/runs", storage=s3_server.storage_config().model_dump(), **{"storage.shard_size": 1})
    workdir = tmp_path / "run"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config.to_yaml())
    command = [sys.executable, "-m", "selflengthen", "run", "--config", str(config_file), "--workdir", str(workdir)]
    storage = get_storage(config.storage)
    layout = RunLayout(local_config(config, workdir))
    queries, initial = layout.iteration(1, "queries"), layout.iteration(1, "initial")
    first_shard = join_uri(initial, CHECKPOINT_DIR, "shard-00000.jsonl")

    try:
        # The first run is killed (the CLI and the step it runs, as a crash would) once the first
        # generation step has checkpointed a record.
        with open(tmp_path / "first.log", "wb") as log:
            first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_for(storage, first_shard, first)
            finally:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
        finished_queries = read_manifest(storage, queries)
        checkpointed = json.loads(storage.read_text(first_shard).splitlines()[0])
        left_running = [ServerRecord.model_validate_json(storage.read_text(uri)).pid for uri in storage.list(layout.serving())]
        assert left_running and all(alive(pid) for pid in left_running)  # servers outlive a killed run

        rerun = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S * 2)
        assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-4000:]
        assert "Lengths per iteration" in rerun.stdout

        # Resume: the finished self-instruct step was not run again, generation kept the killed run's
        # records, and the servers the killed run left were stopped (the rerun's own too).
        assert read_manifest(storage, queries).created_at == finished_queries.created_at
        kept = {r.id: r.text for r in read_records(storage, initial, Response)}
        kept.update({f.id: f.detail for f in read_failures(storage, initial, Failure)})
        assert checkpointed["outputs"] or checkpointed["failures"]
        for output in checkpointed["outputs"]:
            assert kept[output["id"]] == output["text"]
        for failure in checkpointed["failures"]:
            assert kept[failure["id"]] == failure["detail"]
        assert not any(alive(pid) for pid in left_running)
        assert storage.list(layout.serving()) == []
        assert not storage.exists(layout.server_record(EVALUATION_PHASE, "generator"))

        # Every stage wrote records; both roles were trained in both iterations.
        for k in (1, 2):
            for name in ITERATION_DATASETS:
                assert read_manifest(storage, layout.iteration(k, name)).count > 0, (k, name)
            # The Extender lengthens in every iteration: each extended answer is longer than
            # extend.min_ratio x the initial answer it extends. (The two datasets' means need not
            # differ that way: the initial answers near the token limit are the ones that cannot
            # be extended, so the extended set is drawn from the shorter initial answers.)
            initial_words = {r.id: r.words for r in read_records(storage, layout.iteration(k, "initial"), Response)}
            for extended in read_records(storage, layout.iteration(k, "extended"), Response):
                assert extended.words > config.extend.min_ratio * initial_words[extended.initial_id], (k, extended.id)
            for role in ("generator", "extender"):
                trained = read_trained_model(storage, layout.iteration(k, "train", role))
                assert trained is not None and trained.steps == config.training.max_steps and trained.model, (k, role)
        for name in FINAL_DATASETS:
            assert read_manifest(storage, layout.phase(FINAL_PHASE, name)).count > 0, name
        assert read_trained_model(storage, layout.phase(FINAL_PHASE, "train", "generator")) is not None
        assert all(dataset_exists(storage, layout.heldout(j)) for j in range(3))
        assert storage.exists(join_uri(layout.evaluation("final"), "summary.json"))

        # The report.
        for name in ("report.json", "report.md", "report.html", "plots/iteration-2.png"):
            assert (workdir / name).is_file(), name
        report = json.loads((workdir / "report.json").read_text())
        assert [entry["iteration"] for entry in report["iterations"]] == [1, 2]
        for entry in report["iterations"]:
            counts = entry["counts"]
            assert counts["queries"] > 0 and counts["responses"] > 0 and counts["accepted"] > 0
            assert set(counts["rejected"]) == {"generation", "extension", "selection"}
            assert set(entry["lengths"]) == set(DISTRIBUTIONS)
            for stats in entry["lengths"].values():
                assert set(STATS) <= set(stats)
            # Evaluated before and after every iteration.
            for side in ("before", "after"):
                assert entry["evaluation"][side]["longen"]["count"] == config.eval.max_prompts, (entry["iteration"], side)
        assert report["iterations"][1]["evaluation"]["before"] == report["iterations"][0]["evaluation"]["after"]
        assert report["final"]["evaluation"]["final"]["longen"]["count"] == config.eval.max_prompts
        # The method's claim: after the iterations the Generator answers the held-out queries at greater length.
        first_entry, last_entry = report["iterations"][0], report["iterations"][-1]
        assert last_entry["lengths"]["generator_after"]["mean"] > first_entry["lengths"]["generator_before"]["mean"]
    finally:  # a failed or timed-out test leaves no server behind
        teardown_run(local_config(config, workdir))
