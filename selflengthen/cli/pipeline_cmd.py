"""`selflengthen compile` (the pipeline for Kubeflow) and `selflengthen run` (the same pipeline, locally)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from selflengthen.cli.common import ConfigOption, SetOption, handle_errors, load_run_config
from selflengthen.storage import is_s3_uri


def default_workdir(config_workdir: str, run_id: str) -> Path:
    """The config's workdir when it is local, else runs/<run_id> (the artefacts then go to S3)."""
    return Path("runs", run_id) if is_s3_uri(config_workdir) else Path(config_workdir)


@handle_errors
def compile_command(
    output: Path = typer.Option(..., "--output", "-o", help="where to write the compiled pipeline (KFP v2 YAML)"),
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Compile the pipeline of a run config for Kubeflow Pipelines (upload it, or submit it with the KFP client)."""
    from pipelines import compile_pipeline

    cfg = load_run_config(config, overrides)
    path = compile_pipeline(cfg, output)
    typer.echo(f"compiled {cfg.iterations} iteration(s) for execution.target {cfg.execution.target} to {path}")


@handle_errors
def run_command(
    config: Path = ConfigOption,
    workdir: Path = typer.Option(
        None, "--workdir", "-w", help="the run's local folder (default: the config's workdir, or runs/<run_id> when that is on S3)"
    ),
    overrides: list[str] = SetOption,
) -> None:
    """Run the whole pipeline on this machine (kfp.local); the same workdir again resumes it."""
    from selflengthen.orchestration.local import run_local
    from selflengthen.report import length_table

    cfg = load_run_config(config, overrides)
    folder = workdir or default_workdir(cfg.workdir, cfg.run_id)
    console = Console(stderr=True, soft_wrap=True)  # one line per step, also in a log file
    report = run_local(cfg, folder, console=console)
    Console().print(length_table(report))
    console.print(f"report: {Path(folder).resolve() / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_command)
    app.command("run")(run_command)
