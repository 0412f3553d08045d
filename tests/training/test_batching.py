"""Batch plans (packing, length grouping) and packed sequences without cross-attention."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from selflengthen.training.batching import (
    MicroBatchCollator,
    collate_packed,
    collate_padded,
    plan_batches,
    plan_stats,
)
from selflengthen.training.data import IGNORE_INDEX, TokenizedExample


def skewed_lengths(count: int, seed: int = 0) -> list[int]:
    """Long-tailed lengths between 200 and 4,000 tokens, like the method's SFT data."""
    rng = random.Random(seed)
    return [min(4000, max(200, int(rng.lognormvariate(6.6, 0.6)))) for _ in range(count)]


def covers_each_once(plan: list[list[int]], count: int) -> bool:
    return sorted(index for batch in plan for index in batch) == list(range(count))


def test_packing_fills_rows_without_padding() -> None:
    lengths = skewed_lengths(500)
    plan = plan_batches(lengths, strategy="packed", token_budget=8192, batch_size=1, seed=0)
    stats = plan_stats(plan, lengths, "packed")
    assert covers_each_once(plan, len(lengths))
    assert all(sum(lengths[i] for i in row) <= 8192 for row in plan)
    assert stats.non_padding_fraction == 1.0
    assert stats.mean_tokens_per_batch / 8192 > 0.95  # best-fit leaves little room unused
    assert stats.batches <= -(-sum(lengths) // 8192) + 1


def test_packing_widens_rows_for_an_example_longer_than_the_budget() -> None:
    plan = plan_batches([300, 50, 40], strategy="packed", token_budget=100, batch_size=1, seed=0)
    assert covers_each_once(plan, 3) and [0] in plan


def test_length_grouping_keeps_padding_small() -> None:
    lengths = skewed_lengths(500)
    grouped = plan_batches(lengths, strategy="length-grouped", token_budget=8192, batch_size=1, seed=0)
    padded = plan_batches(lengths, strategy="padded", token_budget=8192, batch_size=4, seed=0)
    assert covers_each_once(grouped, len(lengths)) and covers_each_once(padded, len(lengths))
    assert all(len(batch) * max(lengths[i] for i in batch) <= 8192 for batch in grouped)
    assert all(len(batch) <= 4 for batch in padded)
    grouped_fraction = plan_stats(grouped, lengths, "length-grouped").non_padding_fraction
    padded_fraction = plan_stats(padded, lengths, "padded").non_padding_fraction
    assert grouped_fraction > 0.95 > padded_fraction


def test_plans_are_seeded() -> None:
    lengths = skewed_lengths(100)
    for strategy in ("packed", "length-grouped", "padded"):
        first = plan_batches(lengths, strategy=strategy, token_budget=4096, batch_size=4, seed=3)
        assert first == plan_batches(lengths, strategy=strategy, token_budget=4096, batch_size=4, seed=3)


def example(length: int, prompt: int, seed: int) -> TokenizedExample:
    ids = torch.randint(10, 1000, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
    return TokenizedExample(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:])


def test_padded_collation_masks_padding() -> None:
    batch = MicroBatchCollator("length-grouped", pad_token_id=0)([[example(5, 2, 0), example(3, 1, 1)]])
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"][1, 3:].tolist() == [IGNORE_INDEX, IGNORE_INDEX]


def per_token_losses(model, batch: dict) -> torch.Tensor:
    """Cross-entropy of each position's prediction of the next token (0 where there is no label)."""
    with torch.no_grad():
        logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return losses.view(labels.shape)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_examples_do_not_attend_to_each_other(untrained_model_dir, attention: str) -> None:
    """Each example's loss is the same packed with others as alone: no attention across examples."""
    model = AutoModelForCausalLM.from_pretrained(str(untrained_model_dir), attn_implementation=attention).eval()
    examples = [example(length, 4, seed) for seed, length in enumerate((37, 12, 61, 25))]
    packed = per_token_losses(model, collate_packed(examples))[0]
    start = 0
    for item in examples:
        alone = per_token_losses(model, collate_padded([item], pad_token_id=0))[0]
        torch.testing.assert_close(packed[start : start + len(item) - 1], alone, rtol=1e-4, atol=1e-4)
        start += len(item)
    # The position that ends one example and "predicts" the next example's first token has no label.
    assert collate_packed(examples)["labels"][0, len(examples[0])].item() == IGNORE_INDEX
