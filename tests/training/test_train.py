"""train_role without DeepSpeed: output layout, reload and generation, adapter continuation, merging."""

from __future__ import annotations

import json

from peft import PeftModel
from transformers import AutoModelForCausalLM, TrainerCallback

from selflengthen.storage import get_storage
from selflengthen.training import read_trained_model, train_role
from tests.training.helpers import FACTS, generates, losses, make_config, sft_example, write_jsonl


def test_lora_run_reloads_continues_and_merges(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    base = str(untrained_model_dir)
    first = tmp_path / "iteration-1"
    config = make_config(untrained_model_dir, max_steps=4, learning_rate=5e-3, save_merged=True)
    metrics = train_role(config, role="generator", data_uri=facts_jsonl, base_model_uri=base, output_uri=str(first))

    trained = read_trained_model(get_storage(), str(first))
    assert trained is not None and trained.method == "lora" and trained.steps == 4
    assert trained.adapter == str(first / "adapter") and trained.model == str(first / "model")
    assert sorted(path.name for path in first.iterdir()) == ["COMPLETE", "adapter", "metrics.json", "model"]
    assert json.loads((first / "metrics.json").read_text()) == metrics
    assert metrics["steps"] == 4 and len(metrics["loss_curve"]) == 4
    assert metrics["examples"]["kept"] == 6 and metrics["non_padding_fraction"] == 1.0
    assert metrics["tokens_seen"] > 0 and metrics["tokens_per_s"] > 0 and metrics["peak_memory"]["rss_bytes"] > 0
    assert (metrics["precision"], metrics["deepspeed"], metrics["resumed_from_step"]) == ("fp32", None, None)

    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), trained.adapter)
    generates(trained.adapter, adapted)
    generates(trained.model, AutoModelForCausalLM.from_pretrained(trained.model))

    # Iteration 2 continues the adapter on the same base: it starts where iteration 1 ended.
    second = tmp_path / "iteration-2"
    config = make_config(untrained_model_dir, max_steps=2, learning_rate=5e-3)
    continued = train_role(
        config, role="generator", data_uri=facts_jsonl, base_model_uri=base, output_uri=str(second),
        adapter_from_uri=trained.adapter,
    )  # fmt: skip
    assert losses(continued)[0] < losses(metrics)[0] - 0.1
    assert read_trained_model(get_storage(), str(second)).model is None
    assert not (second / "model").exists()

    # A complete output is not trained again (the same settings and inputs: its fingerprint matches).
    again = train_role(
        config, role="generator", data_uri=facts_jsonl, base_model_uri=base, output_uri=str(second),
        adapter_from_uri=trained.adapter,
    )  # fmt: skip
    assert again == continued


def test_length_grouped_run_reports_padding_and_dropped_examples(untrained_model_dir, tmp_path) -> None:
    examples = [sft_example(i, q, a) for i, (q, a) in enumerate(FACTS)] + [sft_example(99, "Long?", "word " * 300)]
    data = write_jsonl(tmp_path / "data.jsonl", examples)
    config = make_config(
        untrained_model_dir, method="full", batching="length-grouped", max_steps=2, max_length=128, truncate_overlong=False
    )
    metrics = train_role(
        config, role="generator", data_uri=data, base_model_uri=str(untrained_model_dir), output_uri=str(tmp_path / "out")
    )
    assert metrics["examples"]["dropped_overlong"] == 1 and metrics["examples"]["kept"] == len(FACTS)
    assert metrics["batching"]["strategy"] == "length-grouped"
    assert 0.8 < metrics["non_padding_fraction"] < 1.0
    assert metrics["steps"] == 2


class _RecordBatches(TrainerCallback):
    """Keeps the planned micro-batches the trainer iterates over."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.batches = list(train_dataloader.dataset.batches)


def test_reference_recipe_takes_one_optimizer_step_per_example_and_truncates(untrained_model_dir, tmp_path) -> None:
    examples = [sft_example(i, q, a) for i, (q, a) in enumerate(FACTS[:3])] + [sft_example(99, "Long?", "word " * 300)]
    data = write_jsonl(tmp_path / "data.jsonl", examples)
    config = make_config(untrained_model_dir, recipe="reference", max_steps=None, epochs=1, max_length=128)
    training = config.training
    assert (training.batching, training.batch_size, training.truncate_overlong, training.lora.dropout) == ("padded", 1, True, 0.0)
    recorder = _RecordBatches()
    metrics = train_role(
        config, role="generator", data_uri=data, base_model_uri=str(untrained_model_dir), output_uri=str(tmp_path / "out"),
        callbacks=[recorder],
    )  # fmt: skip
    assert metrics["steps"] == len(examples)  # one epoch, one example per optimizer step
    assert metrics["examples"]["truncated"] == 1 and metrics["examples"]["dropped_overlong"] == 0
    assert [len(batch) for batch in recorder.batches] == [1] * len(examples)
    assert sorted(len(batch[0]) for batch in recorder.batches)[-1] == 128  # cut at the cutoff, not dropped
    assert metrics["non_padding_fraction"] == 1.0
