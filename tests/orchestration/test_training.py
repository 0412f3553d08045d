"""Where each iteration's training starts from, and what the train step does with data without examples."""

from datetime import datetime, timezone

import pytest

from selflengthen.config import TrainingConfig
from selflengthen.fingerprint import Fingerprint
from selflengthen.datasets import write_records
from selflengthen.errors import TrainingError
from selflengthen.orchestration.serving import served_model
from selflengthen.orchestration.training import starting_point, train
from selflengthen.storage import get_storage, join_uri
from selflengthen.training.output import COMPLETE_NAME, TrainedModel, read_metrics, read_trained_model
from tests.orchestration.helpers import run_config


def trained_output(root, *, method: str = "lora", merged: bool = False) -> str:
    uri = str(root / "train" / "generator")
    trained = TrainedModel(
        role="generator",
        method=method,
        base_model="/models/base",
        adapter=join_uri(uri, "adapter") if method == "lora" else None,
        model=join_uri(uri, "model") if merged or method == "full" else None,
        steps=3,
        completed_at=datetime.now(timezone.utc),
    )
    get_storage().write_text(join_uri(uri, COMPLETE_NAME), trained.model_dump_json())
    return uri


def test_the_first_iteration_starts_from_the_base_model(tmp_path) -> None:
    assert starting_point(get_storage(), TrainingConfig(), "/models/base") == ("/models/base", None)


def test_lora_continues_the_adapter_on_the_fixed_base(tmp_path) -> None:
    previous = trained_output(tmp_path, merged=True)
    assert starting_point(get_storage(), TrainingConfig(), previous) == ("/models/base", join_uri(previous, "adapter"))


def test_lora_without_continuation_starts_a_fresh_adapter_on_the_base(tmp_path) -> None:
    previous = trained_output(tmp_path, merged=True)
    assert starting_point(get_storage(), TrainingConfig(continue_adapter=False), previous) == ("/models/base", None)


@pytest.mark.parametrize("training", [TrainingConfig(method="full"), TrainingConfig(merge_each_iteration=True)])
def test_full_and_merged_runs_continue_from_the_previous_model(tmp_path, training: TrainingConfig) -> None:
    previous = trained_output(tmp_path, method=training.method, merged=True)
    assert starting_point(get_storage(), training, previous) == (join_uri(previous, "model"), None)


def test_merging_needs_a_merged_previous_model(tmp_path) -> None:
    previous = trained_output(tmp_path)
    with pytest.raises(TrainingError, match="no full model"):
        starting_point(get_storage(), TrainingConfig(merge_each_iteration=True), previous)


# ----------------------------------------------------------------------------- data without examples


def empty_sft_data(root) -> str:
    uri = str(root / "sft" / "generator")
    write_records(get_storage(), uri, [], stage="sft-data-generator", fingerprint=Fingerprint.of({}), shard_size=8)
    return uri


def test_data_without_examples_fails_the_step_by_default(tmp_path) -> None:
    config = run_config(str(tmp_path))
    output = str(tmp_path / "iteration-1" / "train" / "generator")
    with pytest.raises(TrainingError, match=r"generator SFT data of iteration 1 .* holds no examples.*on_no_examples: carry_forward"):
        train(config, role="generator", iteration=1, data=empty_sft_data(tmp_path), previous="/models/base", output=output)
    assert read_trained_model(get_storage(), output) is None


def test_carrying_the_base_model_forward(tmp_path) -> None:
    config = run_config(str(tmp_path), training={"method": "full", "on_no_examples": "carry_forward"})
    output = str(tmp_path / "iteration-1" / "train" / "generator")
    metrics = train(config, role="generator", iteration=1, data=empty_sft_data(tmp_path), previous="/models/base", output=output)
    assert metrics["steps"] == 0 and metrics["carried_forward"] == "/models/base" and "holds no examples" in metrics["reason"]
    carried = read_trained_model(get_storage(), output)
    assert (carried.role, carried.steps, carried.model, carried.adapter) == ("generator", 0, "/models/base", None)
    assert served_model(get_storage(), output).model == "/models/base"
    assert starting_point(get_storage(), config.training, output) == ("/models/base", None)  # iteration 2 starts there


def test_carrying_a_trained_adapter_forward(tmp_path) -> None:
    previous = trained_output(tmp_path)
    config = run_config(str(tmp_path), training={"on_no_examples": "carry_forward"})
    output = str(tmp_path / "iteration-2" / "train" / "generator")
    train(config, role="generator", iteration=2, data=empty_sft_data(tmp_path), previous=previous, output=output)
    assert read_trained_model(get_storage(), output).steps == 0
    assert read_metrics(get_storage(), output)["carried_forward"] == previous
    # The next iteration continues the adapter that was carried, on the same fixed base.
    assert starting_point(get_storage(), config.training, output) == ("/models/base", join_uri(previous, "adapter"))
