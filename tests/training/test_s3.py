"""Training with everything in S3: inputs fetched, checkpoints mirrored, a killed run resumed on a fresh machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from selflengthen.storage import get_storage
from selflengthen.training import read_trained_model, train_role
from selflengthen.training.output import local_root
from tests.training.helpers import losses, make_config, run_killed

pytestmark = pytest.mark.integration


def test_killed_run_resumes_from_checkpoints_in_s3(
    untrained_model_dir, facts_jsonl, tmp_path, s3_storage_config, s3_bucket, monkeypatch
) -> None:
    monkeypatch.setenv("SELFLENGTHEN_CACHE", str(tmp_path / "cache"))
    storage = get_storage(s3_storage_config)
    prefix = f"s3://{s3_bucket}"
    storage.upload_dir(untrained_model_dir, f"{prefix}/base")
    storage.put_file(facts_jsonl, f"{prefix}/sft/generator.jsonl")
    inputs = {"data": f"{prefix}/sft/generator.jsonl", "base": f"{prefix}/base", "output": f"{prefix}/out"}
    config = make_config(
        untrained_model_dir, storage=s3_storage_config.model_dump(), max_steps=4, checkpoint_every_steps=2, learning_rate=5e-3
    )

    run_killed(config, tmp_path, inputs["data"], inputs["base"], inputs["output"], step=3)
    remote = storage.list(inputs["output"])
    assert f"{prefix}/out/checkpoints/checkpoint-2/COMPLETE" in remote
    assert f"{prefix}/out/COMPLETE" not in remote
    shutil.rmtree(tmp_path / "cache")  # the restarted run lands on a fresh machine

    metrics = train_role(
        config, role="generator", data_uri=inputs["data"], base_model_uri=inputs["base"], output_uri=inputs["output"]
    )
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4 and len(losses(metrics)) == 4
    trained = read_trained_model(storage, inputs["output"])
    assert trained.adapter == f"{prefix}/out/adapter" and trained.base_model == inputs["base"]
    names = {uri.removeprefix(f"{prefix}/out/") for uri in storage.list(inputs["output"])}
    assert {"COMPLETE", "metrics.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= names
    assert not any(name.startswith("checkpoints/") for name in names)
    assert not local_root(inputs["output"]).exists()
    assert Path(tmp_path / "cache").exists()  # the fetched base model stays cached
