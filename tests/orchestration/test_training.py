"""Where each iteration's training starts from."""

from datetime import datetime, timezone

import pytest

from selflengthen.config import TrainingConfig
from selflengthen.errors import TrainingError
from selflengthen.orchestration.training import starting_point
from selflengthen.storage import get_storage, join_uri
from selflengthen.training.output import COMPLETE_NAME, TrainedModel


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
