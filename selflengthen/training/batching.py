"""Micro-batches for long, length-skewed data, planned once before training.

Three strategies (``training.batching``):

* ``packed``: examples are bin-packed (best-fit decreasing) into rows of at most
  ``per_device_batch_tokens`` tokens. A row is one sequence of concatenated examples with
  ``position_ids`` restarting at 0 for each example and no attention mask; transformers reads the
  restarts as sequence boundaries (a block-diagonal causal mask for sdpa/eager, varlen kernels for
  flash attention), so no token attends across examples. No padding at all.
* ``length-grouped``: examples sorted by length are cut into padded batches of at most
  ``per_device_batch_tokens`` tokens (rows x longest row), so rows of a batch have similar lengths.
* ``padded``: ``batch_size`` examples in random order, padded to the longest (the plain baseline).

The trainer samples micro-batches in a seeded random order, so a plan is a list of index lists.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import torch
from torch.utils.data import Dataset

from selflengthen.training.data import IGNORE_INDEX, TokenizedExample

Strategy = Literal["packed", "length-grouped", "padded"]


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: each example (longest first) goes into the fullest row it fits in."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin number), sorted
    for index in order:
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"an example of {length} tokens does not fit a row of {capacity}")
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            bins.append([index])
            bisect.insort(free, (capacity - length, len(bins) - 1))
        else:
            room, number = free.pop(slot)
            bins[number].append(index)
            bisect.insort(free, (room - length, number))
    return bins


def group_by_length(lengths: Sequence[int], token_budget: int, seed: int) -> list[list[int]]:
    """Consecutive runs of the length-sorted examples, each padded batch within ``token_budget``."""
    rng = random.Random(seed)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:  # ascending: the newest example is the longest of its batch
        if current and (len(current) + 1) * lengths[index] > token_budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def plan_batches(
    lengths: Sequence[int], *, strategy: Strategy, token_budget: int, batch_size: int, seed: int
) -> list[list[int]]:
    """Indices of the examples of each micro-batch under ``strategy``."""
    if strategy == "packed":
        return pack_best_fit(lengths, max(token_budget, max(lengths)))
    if strategy == "length-grouped":
        return group_by_length(lengths, token_budget, seed)
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@dataclass(frozen=True)
class PlanStats:
    """Padding accounting of a plan: ``non_padding_fraction`` = real tokens / tensor tokens."""

    strategy: str
    batches: int
    tokens: int
    tensor_tokens: int
    non_padding_fraction: float
    mean_tokens_per_batch: float
    max_tokens_per_batch: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def plan_stats(plan: Sequence[Sequence[int]], lengths: Sequence[int], strategy: Strategy) -> PlanStats:
    real = [sum(lengths[i] for i in batch) for batch in plan]
    if strategy == "packed":
        tensor = real
    else:
        tensor = [len(batch) * max(lengths[i] for i in batch) for batch in plan]
    return PlanStats(
        strategy=strategy,
        batches=len(plan),
        tokens=sum(real),
        tensor_tokens=sum(tensor),
        non_padding_fraction=sum(real) / sum(tensor),
        mean_tokens_per_batch=sum(real) / len(plan),
        max_tokens_per_batch=max(tensor),
    )


class MicroBatchDataset(Dataset):
    """A planned list of micro-batches; item ``i`` is the examples of micro-batch ``i``."""

    def __init__(self, examples: Sequence[TokenizedExample], plan: Sequence[Sequence[int]]):
        self.batches = [[examples[i] for i in batch] for batch in plan]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> list[TokenizedExample]:
        return self.batches[index]


def collate_packed(examples: Sequence[TokenizedExample]) -> dict[str, Any]:
    """One row of concatenated examples; ``position_ids`` restart per example, no attention mask.

    ``use_cache=False`` is part of the batch: transformers reads sequence boundaries from
    ``position_ids`` only when no cache is built (training never needs one).
    """
    input_ids = [token for example in examples for token in example.input_ids]
    labels = [label for example in examples for label in example.labels]
    positions = [position for example in examples for position in range(len(example))]
    return {
        "input_ids": torch.tensor([input_ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
        "use_cache": False,
    }


def collate_padded(examples: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, Any]:
    """Rows padded on the right to the longest; padding has attention 0 and no loss."""
    width = max(len(example) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id)
    labels = torch.full((len(examples), width), IGNORE_INDEX)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example)] = torch.tensor(example.input_ids)
        labels[row, : len(example)] = torch.tensor(example.labels)
        attention_mask[row, : len(example)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "use_cache": False}


class MicroBatchCollator:
    """Collates one planned micro-batch (the trainer's loader yields one item per step)."""

    def __init__(self, strategy: Strategy, pad_token_id: int):
        self.packed = strategy == "packed"
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[list[TokenizedExample]]) -> dict[str, Any]:
        examples = [example for item in items for example in item]
        return collate_packed(examples) if self.packed else collate_padded(examples, self.pad_token_id)
