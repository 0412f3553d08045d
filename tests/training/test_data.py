"""Chat-template tokenisation: response-only labels, over-long accounting, bad records."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selflengthen.errors import TrainingError
from selflengthen.records import ChatMessage, SftExample
from selflengthen.training.batching import collate_packed
from selflengthen.training.data import IGNORE_INDEX, tokenize_examples, validate_examples
from tests.training.helpers import FACTS, sft_example


@pytest.fixture(scope="module")
def tokenizer(untrained_model_dir):
    return AutoTokenizer.from_pretrained(str(untrained_model_dir))


def test_labels_cover_exactly_the_response(tokenizer) -> None:
    example = sft_example(0, *FACTS[0])
    [tokenized], report = tokenize_examples(tokenizer, [example], max_length=512, truncate_overlong=False)

    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": FACTS[0][0]}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    assert tokenized.input_ids[: len(prompt_ids)] == prompt_ids  # what the model sees before answering
    assert tokenized.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    trained = [label for label in tokenized.labels if label != IGNORE_INDEX]
    assert tokenized.labels[len(prompt_ids):] == trained == tokenized.input_ids[len(prompt_ids):]
    # The answer and the end-of-turn token carry the loss (the model learns to stop).
    assert tokenizer.decode(trained).startswith(FACTS[0][1] + "<|im_end|>")
    assert report.prompt_tokens == len(prompt_ids) and report.response_tokens == len(trained)


def test_prompt_tokens_carry_no_loss(tokenizer, untrained_model_dir) -> None:
    """The gradient of the loss reaches only the logits that predict response tokens."""
    model = AutoModelForCausalLM.from_pretrained(str(untrained_model_dir))
    examples = [sft_example(i, q, a) for i, (q, a) in enumerate(FACTS[:2])]
    tokenized, _ = tokenize_examples(tokenizer, examples, max_length=512, truncate_overlong=False)
    batch = collate_packed(tokenized)
    outputs = model(**batch)
    outputs.logits.retain_grad()
    outputs.loss.backward()

    gradient = outputs.logits.grad[0].abs().sum(-1)  # per position
    predicts_response = torch.zeros_like(gradient, dtype=torch.bool)
    predicts_response[:-1] = batch["labels"][0, 1:] != IGNORE_INDEX  # position i predicts token i+1
    assert torch.all(gradient[~predicts_response] == 0)
    assert torch.all(gradient[predicts_response] > 0)


def test_overlong_examples_are_dropped_and_counted(tokenizer) -> None:
    short = sft_example(0, "Short question?", "Short answer.")
    long = sft_example(1, "Long question?", "word " * 400)
    kept, report = tokenize_examples(tokenizer, [short, long], max_length=64, truncate_overlong=False)
    assert len(kept) == 1 and report.kept == 1
    assert report.dropped_overlong == 1 and report.truncated == 0
    assert report.longest_tokens > 64


def test_overlong_examples_are_cut_inside_the_response_when_configured(tokenizer) -> None:
    long = sft_example(1, "Long question?", "word " * 400)
    [cut], report = tokenize_examples(tokenizer, [long], max_length=64, truncate_overlong=True)
    assert len(cut) == 64 and report.truncated == 1 and report.dropped_overlong == 0
    assert cut.labels[-1] != IGNORE_INDEX


def test_nothing_left_after_dropping_overlong_is_an_error(tokenizer) -> None:
    with pytest.raises(TrainingError, match="all 1 examples exceed training.max_length=16"):
        tokenize_examples(tokenizer, [sft_example(0, *FACTS[0])], max_length=16, truncate_overlong=False)


def test_bad_records_are_refused() -> None:
    with pytest.raises(TrainingError, match="holds no examples"):
        validate_examples([], "generator", "data.jsonl")
    with pytest.raises(TrainingError, match="record ex-0 is for role extender"):
        validate_examples([sft_example(0, *FACTS[0], role="extender")], "generator", "data.jsonl")
    no_answer = SftExample(
        id="q-only",
        role="generator",
        messages=[ChatMessage(role="user", content="Question?"), ChatMessage(role="user", content="Again?")],
        language="en",
    )
    empty_answer = sft_example(1, "Question?", "  ")
    for example in (no_answer, empty_answer):
        with pytest.raises(TrainingError, match=f"record {example.id} has no response"):
            validate_examples([example], "generator", "data.jsonl")
