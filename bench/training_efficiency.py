"""Training efficiency on long, length-skewed SFT data: padding waste and CPU throughput.

Run:  .venv/bin/python bench/training_efficiency.py            (about two minutes on 2 CPU cores)

1. Plans the same examples (a long-tailed length distribution from 200 to 4,000 tokens, like the
   method's lengthened answers) three ways: plain padded batches (``padded``), length-grouped
   padded batches and the project's default, packed rows with per-example position ids. For each:
   the non-padding token fraction (real tokens / tokens in the batch tensors), the number of
   micro-batches and how full the per-device token budget is.
2. Trains the untrained tiny model (selflengthen.tiny_model) on micro-batches of each plan, the
   strategies interleaved so that they share the machine's load, and reports real (non-padding)
   tokens per second on CPU.
3. GPU figures (tokens/s and memory for a 0.5B-1.5B model with ZeRO-3) need a GPU machine; when
   none is available, the results say so.

Figures go to bench/results/training_efficiency.json; the last line printed is
``non_padding_fraction=<value>`` for the project's default batching (packed).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from selflengthen.config import TrainingConfig
from selflengthen.tiny_model import build_tiny_model
from selflengthen.training.batching import MicroBatchCollator, plan_batches, plan_stats
from selflengthen.training.data import IGNORE_INDEX, TokenizedExample

RESULTS = Path(__file__).resolve().parent / "results" / "training_efficiency.json"
STRATEGIES = ("padded", "length-grouped", "packed")
GOAL = 0.95


def sample_lengths(count: int, seed: int) -> list[int]:
    """Long-tailed token counts in [200, 4000]: median about 700, a tail of multi-thousand answers."""
    rng = random.Random(seed)
    return [min(4000, max(200, int(rng.lognormvariate(6.55, 0.7)))) for _ in range(count)]


def percentiles(lengths: list[int]) -> dict[str, int]:
    ordered = sorted(lengths)
    return {f"p{p}": ordered[min(len(ordered) - 1, len(ordered) * p // 100)] for p in (5, 25, 50, 75, 95, 99)} | {
        "min": ordered[0],
        "max": ordered[-1],
    }


def compare_plans(lengths: list[int], budget: int, batch_size: int, seed: int) -> dict[str, dict]:
    figures = {}
    for strategy in STRATEGIES:
        plan = plan_batches(lengths, strategy=strategy, token_budget=budget, batch_size=batch_size, seed=seed)
        stats = plan_stats(plan, lengths, strategy).as_dict()
        stats["budget_fill"] = stats["mean_tokens_per_batch"] / budget
        figures[strategy] = stats
    return figures


def synthetic_examples(lengths: list[int], vocab: int, seed: int) -> list[TokenizedExample]:
    """Random token ids of the given lengths; the first eighth of each is prompt (no loss)."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for length in lengths:
        ids = torch.randint(10, vocab, (length,), generator=generator).tolist()
        prompt = max(1, length // 8)
        examples.append(TokenizedExample(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:]))
    return examples


def cpu_throughput(lengths: list[int], budget: int, batch_size: int, steps: int, seed: int) -> dict[str, dict]:
    """Real tokens per second of forward+backward+AdamW on the tiny model, per strategy, interleaved."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        build_tiny_model(str(Path(folder) / "tiny"), seed=0, pretrain_steps=0)
        model = AutoModelForCausalLM.from_pretrained(str(Path(folder) / "tiny"))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    examples = synthetic_examples(lengths, model.config.vocab_size, seed)
    rng = random.Random(seed)
    batches = {}
    for strategy in STRATEGIES:
        plan = plan_batches(lengths, strategy=strategy, token_budget=budget, batch_size=batch_size, seed=seed)
        rng.shuffle(plan)
        collate = MicroBatchCollator(strategy, pad_token_id=0)
        batches[strategy] = [collate([[examples[i] for i in batch]]) for batch in plan[: steps + 1]]
    totals = {strategy: {"real_tokens": 0, "tensor_tokens": 0, "seconds": 0.0} for strategy in STRATEGIES}
    for step in range(steps + 1):  # step 0 warms up every strategy and is not counted
        for strategy in STRATEGIES:
            batch = batches[strategy][step % len(batches[strategy])]
            started = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step:
                mask = batch.get("attention_mask")
                totals[strategy]["real_tokens"] += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
                totals[strategy]["tensor_tokens"] += batch["input_ids"].numel()
                totals[strategy]["seconds"] += time.perf_counter() - started
    for figures in totals.values():
        figures["real_tokens_per_s"] = figures["real_tokens"] / figures["seconds"]
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=TrainingConfig().per_device_batch_tokens, help="tokens per micro-batch")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per batch of the plain padded baseline")
    parser.add_argument("--cpu-budget", type=int, default=4096, help="tokens per micro-batch of the CPU timing")
    parser.add_argument("--cpu-batch-size", type=int, default=2, help="examples per padded batch of the CPU timing")
    parser.add_argument("--cpu-steps", type=int, default=6, help="timed micro-batches per strategy")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()

    torch.manual_seed(options.seed)
    lengths = sample_lengths(options.examples, options.seed)
    plans = compare_plans(lengths, options.budget, options.batch_size, options.seed)
    throughput = cpu_throughput(lengths, options.cpu_budget, options.cpu_batch_size, options.cpu_steps, options.seed)
    project = plans[TrainingConfig().batching]["non_padding_fraction"]
    results = {
        "examples": options.examples,
        "length_tokens": percentiles(lengths) | {"mean": round(statistics.mean(lengths), 1)},
        "token_budget": options.budget,
        "padded_batch_size": options.batch_size,
        "plans": plans,
        "project_batching": TrainingConfig().batching,
        "non_padding_fraction": project,
        "baseline_non_padding_fraction": plans["padded"]["non_padding_fraction"],
        "goal": GOAL,
        "goal_met": project >= GOAL,
        "cpu": {
            "model": "untrained tiny Qwen2 (selflengthen.tiny_model), fp32, AdamW, sdpa attention",
            "threads": torch.get_num_threads(),
            "token_budget": options.cpu_budget,
            "padded_batch_size": options.cpu_batch_size,
            "timed_micro_batches_per_strategy": options.cpu_steps,
            "strategies": throughput,
            "note": (
                "sdpa over a packed row computes the whole masked square (CPU and GPU); flash attention, which "
                "training.attention=auto picks on a GPU with flash-attn installed, skips the blocks between examples"
            ),
        },
        "gpu": {
            "measured": False,
            "reason": "no GPU machine was lent to this session; tokens/s and memory of a 0.5B-1.5B model with ZeRO-3 not measured",
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for strategy in STRATEGIES:
        plan, cpu = plans[strategy], throughput[strategy]
        print(
            f"{strategy:15s} non-padding {plan['non_padding_fraction']:.3f}  micro-batches {plan['batches']:5d}  "
            f"budget fill {plan['budget_fill']:.3f}  CPU real tokens/s {cpu['real_tokens_per_s']:.0f}"
        )
    print(f"results: {RESULTS}")
    print(f"non_padding_fraction={project:.4f}")


if __name__ == "__main__":
    main()
