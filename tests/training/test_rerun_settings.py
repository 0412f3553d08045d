"""A training output or checkpoint rerun under a changed training setting: refused, or redone with
on_change: redo; never continued."""

from __future__ import annotations

import pytest

from selflengthen.fingerprint import SettingsChanged
from selflengthen.storage import get_storage
from selflengthen.training import read_trained_model, train_role
from tests.training.helpers import make_config, run_killed


def test_changed_learning_rate_is_refused_then_redone(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    base, output = str(untrained_model_dir), tmp_path / "out"
    arguments = dict(role="generator", data_uri=facts_jsonl, base_model_uri=base, output_uri=str(output))
    first = train_role(make_config(untrained_model_dir, max_steps=2), **arguments)
    marker = (output / "COMPLETE").read_text()

    changed = make_config(untrained_model_dir, max_steps=2, learning_rate=2e-3)
    with pytest.raises(SettingsChanged) as refused:
        train_role(changed, **arguments)
    message = str(refused.value)
    assert str(output) in message and "training.learning_rate: 0.001 -> 0.002" in message and "on_change: redo" in message
    assert (output / "COMPLETE").read_text() == marker

    redo = changed.model_copy(update={"on_change": "redo"})
    second = train_role(redo, **arguments)
    trained = read_trained_model(get_storage(), str(output))
    assert trained.fingerprint.settings["training.learning_rate"] == 2e-3 and second["steps"] == 2
    assert second["loss_curve"] != first["loss_curve"]
    assert train_role(redo, **arguments) == second  # the same settings again: kept


def test_a_training_checkpoint_is_not_continued_under_a_changed_setting(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    base, output = str(untrained_model_dir), tmp_path / "killed"
    config = make_config(untrained_model_dir, max_steps=3, checkpoint_every_steps=1)
    run_killed(config, tmp_path, facts_jsonl, base, str(output), step=2)
    assert (output / "checkpoints" / "checkpoint-1" / "COMPLETE").exists()
    arguments = dict(role="generator", data_uri=facts_jsonl, base_model_uri=base, output_uri=str(output))

    changed = make_config(untrained_model_dir, max_steps=3, checkpoint_every_steps=1, learning_rate=2e-3)
    with pytest.raises(SettingsChanged, match=r"training checkpoint .*training\.learning_rate: 0\.001 -> 0\.002"):
        train_role(changed, **arguments)
    assert (output / "checkpoints" / "checkpoint-1" / "COMPLETE").exists() and not (output / "COMPLETE").exists()

    metrics = train_role(changed.model_copy(update={"on_change": "redo"}), **arguments)
    assert metrics["resumed_from_step"] is None and metrics["steps"] == 3
