"""The Extender role trained from the command line on the SFT data the sft-data stage writes for it."""

from pathlib import Path

import pytest

from selflengthen.fingerprint import Fingerprint
from selflengthen.datasets import read_records, write_records
from selflengthen.records import SftExample
from selflengthen.stages.sft_data import run_sft_data
from selflengthen.storage import get_storage
from selflengthen.training import read_trained_model
from tests.stages.helpers import essay, response
from tests.training.helpers import make_config, read_metrics, run_cli, train_arguments

pytestmark = pytest.mark.integration


def extender_data(config, folder: Path) -> str:
    """Extender SFT examples from extended responses, as one iteration's sft-data stage writes them."""
    storage = get_storage()
    extended = [
        response(essay(90, seed), query=f"Write about topic {seed}.", kind="extended", initial_text=essay(40, seed), initial_words=40)
        for seed in range(4)
    ]
    write_records(storage, str(folder / "extended"), extended, stage="extend", fingerprint=Fingerprint.of({}), shard_size=10)
    return run_sft_data(config, extended=str(folder / "extended"), output=str(folder / "sft"))["extender"]


def extender_arguments(config, folder: Path, data: str, base: str, output: Path) -> list[str]:
    return [argument if argument != "generator" else "extender" for argument in train_arguments(config, folder, data, base, str(output))]


def test_extender_trains_from_the_cli_and_continues_its_adapter(untrained_model_dir, tmp_path) -> None:
    """Iteration 1 on one process with ZeRO-2, iteration 2 on two processes with ZeRO-3."""
    settings = {"max_steps": 3, "max_length": 1024, "per_device_batch_tokens": 1024, "learning_rate": 5e-3}
    config = make_config(untrained_model_dir, deepspeed="zero2", **settings)
    data = extender_data(config, tmp_path)
    examples = read_records(get_storage(), data, SftExample)
    assert {example.role for example in examples} == {"extender"} and len(examples) == 4

    base, first, second = str(untrained_model_dir), tmp_path / "iteration-1", tmp_path / "iteration-2"
    result = run_cli(*extender_arguments(config, tmp_path, data, base, first))
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = read_metrics(first)
    assert (metrics["role"], metrics["method"], metrics["steps"]) == ("extender", "lora", 3)
    assert (metrics["deepspeed"], metrics["zero_stage"], metrics["world_size"]) == ("zero2", 2, 1)
    assert metrics["tokens_seen"] > 0
    assert metrics["examples"]["kept"] == 4 and metrics["examples"]["dropped_overlong"] == 0
    assert read_trained_model(get_storage(), str(first)).adapter

    # The next iteration's Extender starts from this one's adapter on the same base (the CLI takes
    # the previous training output and continues the adapter inside it).
    config = make_config(untrained_model_dir, deepspeed="zero3", **settings)
    arguments = extender_arguments(config, tmp_path, data, base, second)
    result = run_cli(*arguments, "--adapter-from", str(first), "--nproc-per-node", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    continued = read_metrics(second)
    assert (continued["role"], continued["zero_stage"], continued["world_size"]) == ("extender", 3, 2)
    assert continued["adapter_from"] == str(first / "adapter")
    assert continued["loss_curve"][0]["loss"] < metrics["loss_curve"][0]["loss"]

    # Generator data is refused for the Extender before any training step.
    arguments[arguments.index(data)] = str(tmp_path / "sft" / "generator")
    arguments[arguments.index(str(second))] = str(tmp_path / "refused")
    refused = run_cli(*arguments)
    assert refused.returncode != 0 and "is for role generator, not extender" in refused.stderr
    assert not (tmp_path / "refused").exists()
