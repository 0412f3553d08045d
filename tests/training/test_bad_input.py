"""Bad input is refused with a clear message before any training step (and nothing is written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.errors import SelfLengthenError
from selflengthen.training import train_role
from tests.training.helpers import FACTS, make_config, sft_example, write_jsonl


def refused(config, output: Path, match: str, **inputs) -> None:
    with pytest.raises(SelfLengthenError, match=match):
        train_role(config, role="generator", output_uri=str(output), **inputs)
    assert not output.exists()


def test_bad_data_is_refused(untrained_model_dir, tmp_path) -> None:
    config = make_config(untrained_model_dir)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_answer = tmp_path / "no-answer.jsonl"
    record = sft_example(7, *FACTS[0]).model_dump()
    record["messages"][-1] = {"role": "user", "content": "and then?"}
    no_answer.write_text(json.dumps(record) + "\n")
    base = str(untrained_model_dir)
    out = tmp_path / "out"
    refused(config, out, "empty.jsonl is empty", data_uri=str(empty), base_model_uri=base)
    refused(config, out, "record ex-7 has no response", data_uri=str(no_answer), base_model_uri=base)


def test_bad_base_model_is_refused(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    config = make_config(untrained_model_dir)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    out = tmp_path / "out"
    refused(config, out, "base model .*missing.* is not a Hugging Face model folder", data_uri=facts_jsonl, base_model_uri=str(tmp_path / "missing"))
    refused(config, out, r"model_type 'bert', architectures \['BertModel'\]\) is not a causal language model", data_uri=facts_jsonl, base_model_uri=str(encoder))


def test_lora_targets_must_exist(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    config = make_config(untrained_model_dir, lora={"target_modules": ["q_proj", "query_key_value"]})
    refused(
        config, tmp_path / "out", r"target_modules: query_key_value not in the model; its linear layers are .*q_proj",
        data_uri=facts_jsonl, base_model_uri=str(untrained_model_dir),
    )  # fmt: skip


def test_adapter_from_needs_a_continuing_lora_run(untrained_model_dir, facts_jsonl, tmp_path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    inputs = {"data_uri": facts_jsonl, "base_model_uri": str(untrained_model_dir), "adapter_from_uri": str(adapter)}
    refused(make_config(untrained_model_dir, method="full"), tmp_path / "out", "--adapter-from is used only by LoRA", **inputs)
    inputs["adapter_from_uri"] = str(tmp_path / "nowhere")
    refused(make_config(untrained_model_dir), tmp_path / "out", "is not a LoRA adapter folder", **inputs)


def test_cli_reports_bad_input_and_exits_non_zero(untrained_model_dir, tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(make_config(untrained_model_dir).to_yaml())
    data = write_jsonl(tmp_path / "extender.jsonl", [sft_example(0, *FACTS[0], role="extender")])
    result = CliRunner().invoke(
        app,
        ["train", "-c", str(config), "--role", "generator", "--data", data,
         "--base-model", str(untrained_model_dir), "--output", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "error: training data" in result.output and "is for role extender, not generator" in result.output
