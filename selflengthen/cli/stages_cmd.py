"""One command per data stage: `selflengthen self-instruct|generate|extend|select|sft-data|length-control`.

Each command imports its stage when it runs, so that `--help` and a stage that needs no model
server (select, sft-data) load no HTTP client."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from selflengthen.cli.common import ConfigOption, SetOption, handle_errors, load_run_config

InputOption = typer.Option(..., "--input", "-i", help="input dataset prefix or JSONL file (local path or s3://)")
OutputOption = typer.Option(..., "--output", "-o", help="output dataset prefix (local path or s3://)")
IterationOption = typer.Option(1, "--iteration", help="macro-iteration number (ids, seeds, logs)")


def _print(summary: dict) -> None:
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))


def _stage_summary(result) -> dict:
    return {
        "output": result.output_uri,
        "records": result.manifest.count,
        "failures": result.manifest.failures,
        "skipped": result.skipped,
        "metrics": result.manifest.metrics,
    }


@handle_errors
def self_instruct_command(
    output: str = OutputOption,
    input: str = typer.Option(None, "--input", "-i", help="seed instructions JSONL (default: packaged seeds)"),
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
    iteration: int = IterationOption,
) -> None:
    """New long-writing instructions by few-shot self-instruct, judged and deduplicated."""
    from selflengthen.stages import self_instruct

    cfg = load_run_config(config, overrides)
    _print(_stage_summary(self_instruct.run_self_instruct(cfg, output=output, iteration=iteration, seeds=input)))


@handle_errors
def generate_command(
    input: str = InputOption, output: str = OutputOption, config: Path = ConfigOption, overrides: list[str] = SetOption
) -> None:
    """Initial responses to every query by the Generator."""
    from selflengthen.stages import generate

    cfg = load_run_config(config, overrides)
    _print(_stage_summary(generate.run_generate(cfg, queries=input, output=output)))


@handle_errors
def extend_command(
    input: str = InputOption, output: str = OutputOption, config: Path = ConfigOption, overrides: list[str] = SetOption
) -> None:
    """Two-stage multi-round extension of every initial response by the Extender."""
    from selflengthen.stages import extend

    cfg = load_run_config(config, overrides)
    _print(_stage_summary(extend.run_extend(cfg, responses=input, output=output)))


@handle_errors
def select_command(
    input: str = InputOption,
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
    iteration: int = IterationOption,
) -> None:
    """Checks plus seeded length-biased sampling, with rejection counts per reason."""
    from selflengthen.stages import select

    cfg = load_run_config(config, overrides)
    manifest = select.run_select(cfg, input=input, output=output, iteration=iteration)
    _print({"output": output, "records": manifest.count, "metrics": manifest.metrics})


@handle_errors
def sft_data_command(
    input: list[str] = typer.Option(..., "--input", "-i", help="extended responses (repeat to accumulate iterations)"),
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
    iteration: int = IterationOption,
) -> None:
    """SFT examples for the Generator and the Extender (line dropout for the Extender)."""
    from selflengthen.stages import sft_data

    cfg = load_run_config(config, overrides)
    _print(sft_data.run_sft_data(cfg, extended=input, output=output, iteration=iteration))


@handle_errors
def length_control_command(
    input: list[str] = typer.Option(..., "--input", "-i", help="response datasets to draw from (repeatable)"),
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Length-constrained queries derived from real response lengths, rewritten by the model."""
    from selflengthen.stages import length_control

    cfg = load_run_config(config, overrides)
    _print(_stage_summary(length_control.run_length_control(cfg, responses=input, output=output)))


def register(app: typer.Typer) -> None:
    app.command("self-instruct")(self_instruct_command)
    app.command("generate")(generate_command)
    app.command("extend")(extend_command)
    app.command("select")(select_command)
    app.command("sft-data")(sft_data_command)
    app.command("length-control")(length_control_command)
