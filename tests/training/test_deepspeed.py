"""DeepSpeed on CPU (gloo): ZeRO-2 in one process, ZeRO-3 on two torchrun processes, a killed run resumed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from accelerate.state import AcceleratorState
from peft import PeftModel
from transformers import AutoModelForCausalLM

from selflengthen.storage import get_storage
from selflengthen.training import read_trained_model, train_role
from tests.training.helpers import generates, losses, make_config, read_metrics, run_cli, run_killed, train_arguments

pytestmark = pytest.mark.integration


@pytest.fixture
def inline_process_group(no_launcher_env):
    """train_role inline, as the pipeline calls it (no launcher); the process group is left afterwards."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    AcceleratorState._reset_state(reset_partial_state=True)


def test_full_finetuning_with_zero2_in_one_process_memorises(
    untrained_model_dir, facts_jsonl, tmp_path, inline_process_group
) -> None:
    output = tmp_path / "full"
    config = make_config(untrained_model_dir, method="full", deepspeed="zero2", max_steps=12, learning_rate=1e-3)
    metrics = train_role(
        config, role="generator", data_uri=facts_jsonl, base_model_uri=str(untrained_model_dir), output_uri=str(output)
    )
    assert (metrics["deepspeed"], metrics["zero_stage"], metrics["world_size"]) == ("zero2", 2, 1)
    curve = losses(metrics)
    assert len(curve) == 12 and curve[-1] < 0.8 * curve[0]
    trained = read_trained_model(get_storage(), str(output))
    assert trained.method == "full" and trained.adapter is None and trained.model == str(output / "model")
    generates(trained.model, AutoModelForCausalLM.from_pretrained(trained.model))
    assert not (output / "checkpoints").exists()


def test_lora_with_zero3_on_two_processes(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    config = make_config(untrained_model_dir, deepspeed="zero3", max_steps=4, learning_rate=5e-3, save_merged=True)
    output = tmp_path / "lora"
    arguments = train_arguments(config, tmp_path, facts_jsonl, str(untrained_model_dir), str(output))
    result = run_cli(*arguments, "--nproc-per-node", "2")
    assert result.returncode == 0, result.stderr[-4000:]

    metrics = read_metrics(output)
    assert (metrics["world_size"], metrics["zero_stage"], metrics["steps"]) == (2, 3, 4)
    # the packed micro-batches are shared by the 2 processes: each step covers 2 of them
    steps_per_epoch = math.ceil(metrics["batching"]["batches"] / 2)
    assert metrics["epochs"] == pytest.approx(4 / steps_per_epoch)
    trained = read_trained_model(get_storage(), str(output))
    base = AutoModelForCausalLM.from_pretrained(str(untrained_model_dir))
    generates(trained.adapter, PeftModel.from_pretrained(base, trained.adapter))
    generates(trained.model, AutoModelForCausalLM.from_pretrained(trained.model))


def test_killed_run_resumes_from_its_last_checkpoint(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    """Killed after the checkpoint of step 2, the same command resumes there and ends at step 6
    exactly as an uninterrupted run does (so optimizer, scheduler and data position were restored)."""
    config = make_config(
        untrained_model_dir, method="full", deepspeed="zero3_offload", max_steps=6, checkpoint_every_steps=2,
        learning_rate=1e-3, per_device_batch_tokens=64, max_length=128,
    )  # fmt: skip
    base, killed, reference = str(untrained_model_dir), tmp_path / "killed", tmp_path / "reference"
    run_killed(config, tmp_path, facts_jsonl, base, str(killed), step=3)
    assert (killed / "checkpoints" / "checkpoint-2" / "COMPLETE").exists()
    assert not (killed / "COMPLETE").exists()

    for output in (killed, reference):  # the killed run's own command again, then an uninterrupted run
        result = run_cli(*train_arguments(config, tmp_path, facts_jsonl, base, str(output)))
        assert result.returncode == 0, result.stderr[-4000:]

    metrics, expected = read_metrics(killed), read_metrics(reference)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == expected["steps"] == 6
    assert [entry["step"] for entry in metrics["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(losses(metrics), losses(expected), rtol=1e-4, atol=1e-4)
    assert not (killed / "checkpoints").exists()
