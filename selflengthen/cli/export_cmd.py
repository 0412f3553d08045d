"""`selflengthen export`: a finished run's dataset and final model, with cards, to a folder and the Hub."""

from __future__ import annotations

from pathlib import Path

import typer

from selflengthen.cli.common import ConfigOption, SetOption, handle_errors, load_run_config
from selflengthen.config import ConfigError


def run_settings(run: str) -> dict[str, str]:
    """``workdir`` and ``run_id`` of the run folder ``run`` (``<workdir>/<run_id>``)."""
    workdir, _, run_id = run.rstrip("/").rpartition("/")
    if not workdir or not run_id:
        raise ConfigError(f"--run {run}: expected the run's folder, <workdir>/<run_id> (local path or s3://)")
    return {"workdir": workdir, "run_id": run_id}


@handle_errors
def export_command(
    run: str = typer.Option(..., "--run", "-r", help="the finished run's folder: <workdir>/<run_id> (local path or s3://)"),
    output: str = typer.Option(None, "--output", "-o", help="where dataset/ and model/ go (local path or s3://; default: export.output, else <run>/export)"),
    push_to_hub: str = typer.Option(None, "--push-to-hub", help="<owner>/<name>: also push both to the Hub (token from export.token_env)"),
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Export a finished run: its dataset of long answers and its final model, with their cards."""
    from selflengthen.export import export_run

    settings = run_settings(run)
    cfg = load_run_config(config, [*overrides, *(f"{key}={value}" for key, value in settings.items())])
    result = export_run(cfg, output=output, push_to_hub=push_to_hub)
    typer.echo(f"dataset: {result.dataset} ({', '.join(f'{split} {n}' for split, n in result.rows.items())})")
    typer.echo(f"model: {result.model}")
    for kind, url in result.hub.items():
        typer.echo(f"pushed {kind}: {url}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
