"""Running evaluations: answering a benchmark (resumable), length and quality scoring, and the
pipeline's evaluate step.

``generate_predictions`` goes through the shared stage machinery (``stages.common.run_units``):
every answered prompt is checkpointed, so an interrupted run continues where it stopped, and the
result is a dataset (part files plus manifest) of the benchmark rows with ``response`` and
``finish_reason`` added.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import EndpointConfig, RunConfig
from selflengthen.evaluation.benchmarks import (
    BenchmarkRow,
    Prediction,
    load_benchmark,
    load_judge_inputs,
    load_predictions,
)
from selflengthen.evaluation.judge import RUBRICS, judge_all, summarize_quality
from selflengthen.evaluation.scoring import LengthReport, score_length
from selflengthen.fingerprint import sha256_bytes
from selflengthen.logs import stage_logger
from selflengthen.records import Failure, stable_id
from selflengthen.stages.common import StageResult, TruncationMetrics, run_units
from selflengthen.storage import Storage, get_storage, join_uri

STAGE = "evaluate"
SUMMARY_NAME = "summary.json"


def write_jsonl(storage: Storage, uri: str, rows: Sequence[dict[str, Any]]) -> None:
    storage.write_text(uri, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _with_generator(config: RunConfig, endpoint: EndpointConfig) -> RunConfig:
    """``config`` answering through ``endpoint``. Evaluation sends chat requests only, so the
    endpoint is marked as continuing chats itself and no tokenizer is loaded for it."""
    chat_only = endpoint.model_copy(update={"chat_template_continuation": True})
    return config.model_copy(update={"serving": config.serving.model_copy(update={"generator": chat_only})})


async def _answer(
    client: GenerationClient, config: RunConfig, unit: tuple[str, BenchmarkRow]
) -> tuple[list[Prediction], list[Failure]]:
    unit_id, row = unit
    (completion,) = await client.chat([{"role": "user", "content": row.prompt}], seeded(config.eval.sampling, STAGE, unit_id))
    fields = {"id": unit_id, "response": completion.text, "finish_reason": completion.finish_reason}
    return [Prediction.model_validate({**row.model_dump(exclude_none=True), **fields})], []


def generate_predictions(
    config: RunConfig,
    benchmark: str,
    rows: Sequence[BenchmarkRow],
    *,
    endpoint: EndpointConfig,
    output: str,
    storage: Storage | None = None,
    iteration: int | None = None,
) -> StageResult:
    """Answer every prompt of ``rows`` through ``endpoint`` with ``config.eval.sampling``; the
    predictions dataset goes to ``output`` (a rerun resumes, a finished one is skipped)."""
    ids = [stable_id(benchmark, index, row.prompt) for index, row in enumerate(rows)]
    return run_units(
        _with_generator(config, endpoint),
        stage=f"eval-{benchmark}",
        role="generator",
        units=[(unit_id, (unit_id, row)) for unit_id, row in zip(ids, rows)],
        output_uri=output,
        output_model=Prediction,
        work=_answer,
        metrics=lambda: TruncationMetrics("predictions"),
        sections=["eval.sampling"],
        inputs={f"{benchmark} prompts": sha256_bytes(json.dumps([row.model_dump(mode="json") for row in rows]).encode())},
        storage=storage,
        iteration=iteration,
    )


def length_report(storage: Storage, benchmark: str, predictions: str) -> LengthReport:
    """Length-following scores of the predictions (JSONL file or dataset) at ``predictions``."""
    return score_length(benchmark, load_predictions(storage, benchmark, predictions))


def quality_report(
    config: RunConfig, storage: Storage, predictions: str, *, judge: EndpointConfig, rubric: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The judge's summary of the predictions at ``predictions`` and one verdict per prompt."""
    items = load_judge_inputs(storage, predictions)
    chosen = RUBRICS[rubric]
    verdicts = asyncio.run(judge_all(judge, chosen, items, config.eval.judge_sampling, config.eval.judge_retries))
    per_prompt = [{"index": index, **verdict.to_json()} for index, verdict in enumerate(verdicts)]
    return summarize_quality(chosen, items, verdicts), per_prompt


def evaluate(config: RunConfig, *, endpoint: EndpointConfig, output: str, iteration: int | None) -> dict[str, Any]:
    """The evaluate step: for each of ``config.eval.benchmarks``, answer it through ``endpoint``,
    score length following and, unless ``eval.quality_rubric`` is "none", quality with the
    ``serving.judge`` endpoint.

    Writes below ``output``: ``<benchmark>/predictions/`` (dataset), ``<benchmark>/length.jsonl`` and
    ``<benchmark>/quality.jsonl`` (per prompt) and ``summary.json``. Returns
    ``{benchmark: {"overall": ..., "count": ..., <breakdowns>..., "quality": {...}}}``.
    """
    storage = get_storage(config.storage)
    log = stage_logger(config.run_id, STAGE, iteration)
    results: dict[str, Any] = {}
    for benchmark in config.eval.benchmarks:
        rows = load_benchmark(
            storage, benchmark, config.eval.benchmark_files.get(benchmark), max_prompts=config.eval.max_prompts,
            languages=config.languages,
        )  # fmt: skip
        predictions = join_uri(output, benchmark, "predictions")
        generate_predictions(
            config, benchmark, rows, endpoint=endpoint, output=predictions, storage=storage, iteration=iteration
        )
        report = length_report(storage, benchmark, predictions)
        write_jsonl(storage, join_uri(output, benchmark, "length.jsonl"), report.prompts)
        results[benchmark] = dict(report.summary)
        if config.eval.quality_rubric != "none":
            summary, per_prompt = quality_report(
                config, storage, predictions, judge=config.serving.judge, rubric=config.eval.quality_rubric
            )
            write_jsonl(storage, join_uri(output, benchmark, "quality.jsonl"), per_prompt)
            results[benchmark]["quality"] = summary
        log.info("%s: %s", benchmark, json.dumps(results[benchmark], ensure_ascii=False))
    storage.write_text(
        join_uri(output, SUMMARY_NAME),
        json.dumps({"iteration": iteration, "benchmarks": results}, ensure_ascii=False, indent=2),
    )
    return results
