"""The tiny model folder: tokenizer, chat template, shapes, determinism, CLI, and the pre-trained model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.config import ChecksConfig
from selflengthen.errors import SelfLengthenError
from selflengthen.prompts import render_prompt
from selflengthen.text import check_ending
from selflengthen.tiny_corpus import Example
from selflengthen.tiny_model import build_tiny_model, encode_example

TEXTS = [
    "Write a detailed essay on bridges.\n\n## Early Days\n\nIn 1850, engineers built them.  Twice!",
    "请写一篇详细的文章，介绍造纸术的发明。\n\n## 早期\n\n起初，人们用树皮造纸。",
    "Mixed 中文 and English, tabs\tand émojis 🙂 survive.",
]
MESSAGES = [{"role": "user", "content": "Write about kites."}]


@pytest.fixture(scope="module")
def tokenizer(untrained_model_dir):
    return AutoTokenizer.from_pretrained(untrained_model_dir)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trips_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tokenizer_has_the_special_tokens_and_context_length(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.model_max_length == 4096
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tokenizer.convert_ids_to_tokens(tokenizer.encode(token, add_special_tokens=False)) == [token]


def test_chat_template_renders_chatml(tokenizer):
    rendered = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|im_start|>user\nWrite about kites.<|im_end|>\n<|im_start|>assistant\n"
    parts = [{"role": "user", "content": [{"type": "text", "text": "Write about kites."}]}]
    assert tokenizer.apply_chat_template(parts, add_generation_prompt=True, tokenize=False) == rendered


def test_chat_template_continues_the_final_message_with_its_trailing_blank_line(tokenizer):
    prefill = "Kites are old.\n\n"
    rendered = tokenizer.apply_chat_template(
        MESSAGES + [{"role": "assistant", "content": prefill}], continue_final_message=True, tokenize=False
    )
    assert rendered == "<|im_start|>user\nWrite about kites.<|im_end|>\n<|im_start|>assistant\n" + prefill


def test_training_sequences_are_tokenised_as_the_stages_send_them(tokenizer):
    prompt = render_prompt("judge_suitability", "en", min_words=2000, instruction="Write about kites.")
    ids = encode_example(tokenizer, Example("judge", "en", prompt, "yes"))
    served = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    served_ids = tokenizer.encode(served, add_special_tokens=False)
    assert ids[: len(served_ids)] == served_ids
    assert tokenizer.decode(ids[len(served_ids) :]) == "yes<|im_end|>"


def test_folder_is_a_standard_qwen2_folder(untrained_model_dir):
    names = {path.name for path in untrained_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    tokenizer_config = json.loads((untrained_model_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    config = json.loads((untrained_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    generation = GenerationConfig.from_pretrained(untrained_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(untrained_model_dir)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation.eos_token_id


def test_model_has_about_five_million_parameters(untrained_model_dir):
    model = AutoModelForCausalLM.from_pretrained(untrained_model_dir)
    assert 4_500_000 <= model.num_parameters() <= 5_500_000
    assert model.config.max_position_embeddings >= 4096


def test_same_seed_builds_identical_weights(tmp_path):
    first = build_tiny_model(str(tmp_path / "a"), seed=3, pretrain_steps=2)
    second = build_tiny_model(str(tmp_path / "b"), seed=3, pretrain_steps=2)
    assert first["final_loss"] == second["final_loss"]
    weights_a = load_file(tmp_path / "a" / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_build_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SelfLengthenError, match="already exists"):
        build_tiny_model(str(tmp_path), pretrain_steps=0)
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


def test_cli_builds_an_untrained_model(tmp_path):
    result = CliRunner().invoke(app, ["tiny-model", "--output", str(tmp_path / "m"), "--steps", "0"])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and (tmp_path / "m" / "config.json").is_file()


def test_cli_rejects_a_non_empty_output(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    result = CliRunner().invoke(app, ["tiny-model", "--output", str(tmp_path), "--steps", "0"])
    assert result.exit_code == 2 and "already exists" in result.output


@pytest.mark.pretrained
@pytest.mark.parametrize(
    "language, query",
    [("en", "Write a detailed essay about the history of kites."), ("zh", "请写一篇详细的文章，介绍风筝的历史。")],
)
def test_pretrained_model_answers_a_query_with_text_ending_in_punctuation(tiny_model_dir, language, query):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": query}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    torch.manual_seed(0)
    # The folder's generation_config carries the method's sampling; three samples, as a stage retries.
    output = model.generate(**prompt, max_new_tokens=768, num_return_sequences=3)
    answers = tokenizer.batch_decode(output[:, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert all(answer.strip() for answer in answers)
    enders = ChecksConfig().for_language(language).enders
    assert any(check_ending(answer, enders) is None for answer in answers), answers
