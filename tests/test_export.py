"""Export of a finished tiny run: the dataset through `datasets`, the model through transformers,
the cards' figures, the CLI, and the push's errors without a token or a hub."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.datasets import read_records
from selflengthen.errors import StorageError
from selflengthen.export import export_run
from selflengthen.orchestration.layout import RunLayout
from selflengthen.records import ChatMessage, Response, SftExample, stable_id
from selflengthen.storage import get_storage, join_uri
from selflengthen.training.output import TrainedModel
from tests.orchestration.helpers import run_config
from tests.orchestration.test_reporting import finished_run, write

LENGTH_CONTROL_WORDS = (120, 340)


def card_header(path: Path) -> dict:
    _, header, _ = path.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(header)


def save_final_adapter(base: Path, output: Path) -> None:
    """A LoRA adapter on ``base`` with non-zero weights, saved as the final training's result."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.01)
    model.save_pretrained(str(output / "adapter"))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(output / "adapter"))
    trained = TrainedModel(
        role="generator", method="lora", base_model=str(base), adapter=str(output / "adapter"), model=None, steps=3, completed_at=datetime.now(timezone.utc)
    )
    (output / "COMPLETE").write_text(trained.model_dump_json())


@pytest.fixture
def finished(tmp_path: Path, untrained_model_dir: Path):
    config = run_config(str(tmp_path / "runs"), model={"base": str(untrained_model_dir)}, export={"license": "apache-2.0"})
    finished_run(config)
    layout = RunLayout(config)
    examples = [
        SftExample(
            id=stable_id("lc", words),
            role="generator",
            messages=[ChatMessage(role="user", content=f"Write about {words}. About {words} words."), ChatMessage(role="assistant", content="x " * words)],
            language="en",
            iteration=1,
            meta={"constraint": {"type": "about", "text": f"About {words} words."}, "words": words},
        )
        for words in LENGTH_CONTROL_WORDS
    ]
    write(config, layout.phase("final", "length-control"), examples, metrics={"examples": 2})
    save_final_adapter(untrained_model_dir, Path(layout.phase("final", "train", "generator")))
    return config


def test_export_writes_a_loadable_dataset_and_model_with_cards(finished, tmp_path: Path) -> None:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = finished
    result = export_run(config, output=str(tmp_path / "out"))
    assert result.dataset == str(tmp_path / "out" / "dataset") and result.rows == {"extended": 2, "length_control": 2}

    # the dataset, as datasets reads a folder
    loaded = datasets.load_dataset(result.dataset)
    assert set(loaded) == {"extended", "length_control"}
    layout = RunLayout(config)
    selected = [record for k in (1, 2) for record in read_records(get_storage(), layout.iteration(k, "selected"), Response)]
    assert [row["id"] for row in loaded["extended"]] == [record.id for record in selected]
    assert [row["messages"][1]["content"] for row in loaded["extended"]] == [record.text for record in selected]
    assert [row["iteration"] for row in loaded["extended"]] == [1, 2]
    assert [(row["words"], row["constraint"]) for row in loaded["length_control"]] == [(n, f"About {n} words.") for n in LENGTH_CONTROL_WORDS]

    dataset_card = Path(result.dataset) / "README.md"
    header = card_header(dataset_card)
    assert header["license"] == "apache-2.0" and header["language"] == ["en"] and header["task_categories"] == ["text-generation"]
    assert header["size_categories"] == ["n<1K"]
    text = dataset_card.read_text()
    assert f"- config fingerprint: `{config.config_hash()}`" in text and f"- base model: `{config.model.base}`" in text
    assert "| 1 | 1 | 100.0 | 100.0 | 100.0 | 100 |" in text  # iteration 1: one selected text of 100 words
    assert "- iteration 1 rejected: generation: no_ending 2; extension: below_min_ratio 1; selection: length_biased_sampling 1" in text

    # the model, as transformers loads a folder: merged, no adapter, generating
    model_dir = Path(result.model)
    assert not (model_dir / "adapter_config.json").exists()
    assert list(model_dir.glob("*.safetensors")) and (model_dir / "generation_config.json").is_file()
    assert json.loads((model_dir / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write about rivers."}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[-1] == prompt["input_ids"].shape[-1] + 5

    model_card = (model_dir / "README.md").read_text()
    assert card_header(model_dir / "README.md") == {
        "library_name": "transformers", "license": "apache-2.0", "pipeline_tag": "text-generation", "tags": ["self-lengthen", "long-form-generation"]
    }
    assert "| after iteration 2 | 2 | 95.0 | 95.0 |" in model_card and "| after final SFT | 2 | 140.0 | 140.0 |" in model_card
    assert "| final | longen | 0.4 |" in model_card
    assert "2 selected extended responses, 2 length-constrained examples" in model_card


def test_cli_exports_a_run_folder_and_refuses_an_unfinished_one(finished, tmp_path: Path) -> None:
    config = finished
    run = join_uri(config.workdir, config.run_id)
    result = CliRunner().invoke(app, ["export", "--run", run, "--set", f"model.base={config.model.base}", "--set", "iterations=2", "--set", "languages=[en]"])
    assert result.exit_code == 0, result.output
    assert f"model: {RunLayout(config).export('model')}" in result.output
    assert Path(RunLayout(config).export("dataset", "data", "extended-00000-of-00001.parquet")).is_file()

    get_storage().delete(join_uri(RunLayout(config).phase("final", "train", "generator"), "COMPLETE"))
    again = CliRunner().invoke(app, ["export", "--run", run, "--output", str(tmp_path / "other"), "--set", f"model.base={config.model.base}", "--set", "iterations=2", "--set", "languages=[en]"])
    assert again.exit_code == 2 and "no finished final training at" in again.output
    assert not (tmp_path / "other").exists()


def test_push_needs_the_token_variable_and_says_when_offline(finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SELFLENGTHEN_TEST_TOKEN", raising=False)
    config = finished.model_copy(update={"export": finished.export.model_copy(update={"token_env": "SELFLENGTHEN_TEST_TOKEN"})})
    with pytest.raises(StorageError, match="needs a token in the env var SELFLENGTHEN_TEST_TOKEN"):
        export_run(config, output=str(tmp_path / "out"), push_to_hub="someone/long-answers")
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("SELFLENGTHEN_TEST_TOKEN", "hf_test")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(StorageError, match="cannot push dataset someone/long-answers to the Hugging Face Hub: HF_HUB_OFFLINE is set"):
        export_run(config, output=str(tmp_path / "out"), push_to_hub="someone/long-answers")


def test_push_creates_both_repos_and_commits_every_file(finished, tmp_path: Path, hub_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    result = export_run(finished, output=str(tmp_path / "out"), push_to_hub="someone/long-answers")
    assert result.hub == {"dataset": f"{hub_server.endpoint}/datasets/someone/long-answers", "model": f"{hub_server.endpoint}/someone/long-answers"}
    for kind, folder in (("dataset", Path(result.dataset)), ("model", Path(result.model))):
        repo = hub_server.repos[(kind, "someone/long-answers")]
        assert repo["private"] is True and repo["token"] == "Bearer hf_test_token"
        local = {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        assert repo["files"] == local
    assert "model.safetensors" in hub_server.repos[("model", "someone/long-answers")]["files"]
    assert "datasets:\n- someone/long-answers" in (Path(result.model) / "README.md").read_text()
    assert all("hf_test_token" not in path.read_text(errors="ignore") for path in (tmp_path / "out").rglob("*") if path.is_file())


@pytest.mark.integration
def test_export_to_s3_writes_the_same_files(finished, tmp_path: Path, s3_server, s3_credentials_env) -> None:
    """The run is local, the export goes to S3 (SeaweedFS): every file of a local export is there, byte for byte."""
    local = export_run(finished, output=str(tmp_path / "local"))
    bucket = s3_server.create_bucket()
    config = finished.model_copy(update={"storage": s3_server.storage_config()})
    remote = export_run(config, output=f"s3://{bucket}/export")
    assert remote.dataset == f"s3://{bucket}/export/dataset" and remote.rows == local.rows
    storage = get_storage(config.storage)
    for name, uri in (("dataset", remote.dataset), ("model", remote.model)):
        folder = Path(getattr(local, name))
        files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
        assert sorted(item.removeprefix(uri + "/") for item in storage.list(uri)) == files
        for relative in files:
            if relative != "README.md":  # a card names the config's hash, and this config's storage differs
                assert storage.read_bytes(join_uri(uri, relative)) == (folder / relative).read_bytes(), relative
