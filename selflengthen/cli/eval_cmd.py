"""`selflengthen eval generate|length|quality`: answer a benchmark, score length following and quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from selflengthen.cli.common import ConfigOption, SetOption, check_file_writable, fail, handle_errors, load_run_config
from selflengthen.evaluation.benchmarks import BenchmarkName, RubricName, load_benchmark
from selflengthen.storage import get_storage

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate a model: answer a benchmark, score length following and quality.")

BenchmarkOption = typer.Option(..., "--benchmark", "-b", help="which benchmark the prompts or predictions belong to")
PredictionsOption = typer.Option(
    ..., "--predictions", "-p", help="predictions: a JSONL file or an `eval generate` output (local path or s3://)"
)
JsonOption = typer.Option(False, "--json", help="print one JSON object (overall score under `overall`)")
PerPromptOption = typer.Option(None, "--output", "-o", help="also write the per-prompt scores here (JSONL)")


def _echo_summary(summary: dict[str, Any], indent: int = 0) -> None:
    """Readable nested ``key: value`` lines, scores with two decimals."""
    for key, value in summary.items():
        if isinstance(value, dict):
            typer.echo(f"{' ' * indent}{key}:")
            _echo_summary(value, indent + 2)
        else:
            typer.echo(f"{' ' * indent}{key}: {f'{value:.2f}' if isinstance(value, float) else value}")


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        _echo_summary(summary)


@eval_app.command("generate")
@handle_errors
def generate_command(
    benchmark: BenchmarkName = BenchmarkOption,
    benchmark_file: str = typer.Option(
        None,
        "--benchmark-file",
        "-f",
        help="local path, s3:// or hf://datasets/<owner>/<repo>/<file> (default: eval.benchmark_files, else the packaged copy)",
    ),
    endpoint: str = typer.Option(..., "--endpoint", "-e", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"),
    model: str = typer.Option(..., "--model", "-m", help="model name the server knows"),
    output: str = typer.Option(..., "--output", "-o", help="predictions dataset prefix (local path or s3://); reruns resume"),
    max_prompts: int = typer.Option(
        None, "--max-prompts", min=1, help="answer only the first N prompts (default: eval.max_prompts)"
    ),
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Answer every prompt of a benchmark (settings from eval.sampling and serving.generator)."""
    from selflengthen.evaluation.runner import generate_predictions

    cfg = load_run_config(config, overrides)
    storage = get_storage(cfg.storage)
    source = benchmark_file or cfg.eval.benchmark_files.get(benchmark)
    rows = load_benchmark(storage, benchmark, source, max_prompts=max_prompts or cfg.eval.max_prompts)
    target = cfg.serving.generator.model_copy(update={"base_url": endpoint, "model": model})
    result = generate_predictions(cfg, benchmark, rows, endpoint=target, output=output, storage=storage)
    manifest = result.manifest
    summary = {"output": result.output_uri, "predictions": manifest.count, "skipped": result.skipped, "metrics": manifest.metrics}
    typer.echo(json.dumps(summary, ensure_ascii=False))


@eval_app.command("length")
@handle_errors
def length_command(
    benchmark: BenchmarkName = BenchmarkOption,
    predictions: str = PredictionsOption,
    as_json: bool = JsonOption,
    per_prompt: str = PerPromptOption,
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Length-following scores (0-100): LonGen per type, language and range; S_l per length bucket."""
    from selflengthen.evaluation.runner import length_report, write_jsonl

    storage = get_storage(load_run_config(config, overrides).storage)
    if per_prompt:
        check_file_writable(storage, per_prompt)
    report = length_report(storage, benchmark, predictions)
    if per_prompt:
        write_jsonl(storage, per_prompt, report.prompts)
    _report(report.summary, as_json)


@eval_app.command("quality")
@handle_errors
def quality_command(
    predictions: str = PredictionsOption,
    judge_endpoint: str = typer.Option(..., "--judge-endpoint", help="OpenAI-compatible base URL of the judge"),
    judge_model: str = typer.Option(..., "--judge-model", help="judge model name the server knows"),
    rubric: RubricName = typer.Option(..., "--rubric", help="longbench-write (6 x 1-5, S_q) or self-lengthen (7 x 1-10)"),
    as_json: bool = JsonOption,
    per_prompt: str = PerPromptOption,
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """LLM-judge quality scores; prompts the judge never scored are counted, never given a default."""
    from selflengthen.evaluation.runner import quality_report, write_jsonl

    cfg = load_run_config(config, overrides)
    storage = get_storage(cfg.storage)
    if per_prompt:
        check_file_writable(storage, per_prompt)
    judge = cfg.serving.judge.model_copy(update={"base_url": judge_endpoint, "model": judge_model})
    summary, verdicts = quality_report(cfg, storage, predictions, judge=judge, rubric=rubric)
    if per_prompt:
        write_jsonl(storage, per_prompt, verdicts)
    _report(summary, as_json)
    if summary["unscored"]:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in summary["unscored_reasons"].items())
        scored = f"the judge scored {summary['scored']} of {summary['count']} prompts ({summary['unscored']} unscored: {reasons})"
        if summary["scored"] < cfg.eval.min_scored_fraction * summary["count"]:
            fail(f"{scored}; eval.min_scored_fraction={cfg.eval.min_scored_fraction} requires at least "
                 f"{cfg.eval.min_scored_fraction * summary['count']:g}")  # fmt: skip
        typer.echo(f"warning: {scored}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
