"""The whole pipeline, 2 iterations, tiny model, under kfp.local, with S3 storage (SeaweedFS)."""

from pathlib import Path

import pytest

from selflengthen.datasets import dataset_exists, read_manifest
from selflengthen.orchestration.layout import EVALUATION_PHASE, FINAL_PHASE, RunLayout
from selflengthen.orchestration.local import run_local
from selflengthen.report import DISTRIBUTIONS, STATS
from selflengthen.storage import get_storage, join_uri
from selflengthen.training.output import read_trained_model
from tests.pipelines.e2e_config import e2e_config

ITERATION_DATASETS = ("queries", "initial", "extended", "selected", "sft/generator", "sft/extender")
FINAL_DATASETS = ("queries", "collected", "length-control")


@pytest.mark.e2e
@pytest.mark.pretrained
def test_two_iterations_with_s3_storage(tmp_path: Path, tiny_model_dir: Path, s3_server, s3_credentials_env) -> None:
    bucket = s3_server.create_bucket()
    config = e2e_config(tiny_model_dir, f"s3://{bucket}/runs", storage=s3_server.storage_config().model_dump())
    report = run_local(config, tmp_path / "run")

    storage = get_storage(config.storage)
    layout = RunLayout(config)
    for k in (1, 2):
        for name in ITERATION_DATASETS:
            assert read_manifest(storage, layout.iteration(k, name)).count > 0, (k, name)
        for role in ("generator", "extender"):
            trained = read_trained_model(storage, layout.iteration(k, "train", role))
            assert trained is not None and trained.steps == config.training.max_steps and trained.model, (k, role)
    for name in FINAL_DATASETS:
        assert read_manifest(storage, layout.phase(FINAL_PHASE, name)).count > 0, name
    assert read_trained_model(storage, layout.phase(FINAL_PHASE, "train", "generator")) is not None
    assert all(dataset_exists(storage, layout.heldout(j)) for j in range(3))
    assert storage.exists(join_uri(layout.evaluation("final"), "summary.json"))
    assert storage.list(layout.serving()) == []  # every server was torn down
    assert not storage.exists(layout.server_record(EVALUATION_PHASE, "generator"))

    for name in ("report.json", "report.md", "report.html", "plots/iteration-2.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert [entry["iteration"] for entry in report["iterations"]] == [1, 2]
    for entry in report["iterations"]:
        counts = entry["counts"]
        assert counts["queries"] > 0 and counts["responses"] > 0 and counts["accepted"] > 0
        assert set(counts["rejected"]) == {"generation", "extension", "selection"}
        assert set(entry["lengths"]) == set(DISTRIBUTIONS)
        for stats in entry["lengths"].values():
            assert set(STATS) <= set(stats)
        # The Extender lengthens in every iteration.
        assert entry["lengths"]["extended"]["mean"] > entry["lengths"]["initial"]["mean"]
    # The method's claim: after the iterations the Generator answers the held-out queries at greater length.
    first, last = report["iterations"][0], report["iterations"][-1]
    assert last["lengths"]["generator_after"]["mean"] > first["lengths"]["generator_before"]["mean"]
    # Evaluated before and after every iteration, and the final model after the length-following SFT.
    for entry in report["iterations"]:
        for side in ("before", "after"):
            assert entry["evaluation"][side]["longen"]["count"] == config.eval.max_prompts, (entry["iteration"], side)
    assert report["iterations"][1]["evaluation"]["before"] == report["iterations"][0]["evaluation"]["after"]
    assert report["final"]["evaluation"]["final"]["longen"]["count"] == config.eval.max_prompts
