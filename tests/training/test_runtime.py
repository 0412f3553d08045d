"""DeepSpeed presets, hardware-dependent defaults and the launch command lines."""

from __future__ import annotations

import json
import os

import pytest
import torch

from selflengthen.config import TrainingConfig
from selflengthen.errors import TrainingError
from selflengthen.training.launch import TrainingRequest, local_torchrun_command, trainjob_command
from selflengthen.training.runtime import (
    PRESETS,
    ensure_process_group_env,
    load_deepspeed_config,
    preset_path,
    resolve_runtime,
)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_ship_as_package_data(name: str) -> None:
    config = load_deepspeed_config(name)
    stage = config["zero_optimization"]["stage"]
    assert stage == (2 if name == "zero2" else 3)
    assert ("offload_param" in config["zero_optimization"]) == (name == "zero3_offload")
    assert config["bf16"]["enabled"] == "auto" and config["train_micro_batch_size_per_gpu"] == "auto"
    assert preset_path(name).is_file()


def test_deepspeed_config_by_path_or_none(tmp_path) -> None:
    custom = tmp_path / "ds.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    assert load_deepspeed_config(str(custom)) == {"zero_optimization": {"stage": 1}}
    assert load_deepspeed_config(None) is None and load_deepspeed_config("none") is None
    with pytest.raises(TrainingError, match="neither a preset"):
        load_deepspeed_config("zero4")
    custom.write_text("{not json")
    with pytest.raises(TrainingError, match="not valid JSON"):
        load_deepspeed_config(str(custom))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU defaults")
def test_cpu_defaults_are_fp32_without_checkpointing() -> None:
    runtime = resolve_runtime(TrainingConfig(deepspeed="zero3"))
    assert (runtime.device, runtime.precision, runtime.gradient_checkpointing) == ("cpu", "fp32", False)
    assert runtime.attention == "sdpa"
    assert runtime.zero_stage == 3
    forced = resolve_runtime(TrainingConfig(precision="bf16", gradient_checkpointing="on", deepspeed=None))
    assert (forced.precision, forced.gradient_checkpointing, forced.zero_stage) == ("bf16", True, None)
    with pytest.raises(TrainingError, match="fp16 needs a GPU"):
        resolve_runtime(TrainingConfig(precision="fp16"))


def test_one_process_group_is_described_only_when_no_launcher_did(no_launcher_env) -> None:
    ensure_process_group_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]) == ("0", "1", "127.0.0.1")
    assert int(os.environ["MASTER_PORT"]) > 0
    os.environ.update(RANK="3", WORLD_SIZE="8")
    ensure_process_group_env()
    assert os.environ["RANK"] == "3"


def test_launch_commands_run_the_train_module() -> None:
    request = TrainingRequest(
        role="extender", data_uri="s3://b/d", base_model_uri="s3://b/m", output_uri="s3://b/o", adapter_from_uri="s3://b/a"
    )
    arguments = request.arguments(config_path="c.yaml", overrides=["training.max_steps=5"])
    assert arguments[arguments.index("--adapter-from") + 1] == "s3://b/a"
    assert arguments[-2:] == ["--set", "training.max_steps=5"]
    assert trainjob_command(arguments)[:3] == ["torchrun", "-m", "selflengthen.training"]
    local = local_torchrun_command(arguments, 2)
    assert "--nproc-per-node=2" in local and local[local.index("-m", 3) + 1] == "selflengthen.training"
