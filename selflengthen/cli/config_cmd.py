"""`selflengthen config validate|show`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.syntax import Syntax

from selflengthen.cli.common import ConfigOption, SetOption, handle_errors, load_run_config
from selflengthen.config import load_config
from selflengthen.config_reference import config_reference_markdown

config_app = typer.Typer(no_args_is_help=True, help="Validate and show run configurations.")


@config_app.command("validate")
@handle_errors
def validate(file: Path = typer.Argument(..., help="run config YAML")) -> None:
    """Validate FILE; exit 2 with a message naming each bad field."""
    config = load_config(file)
    typer.echo(f"{file}: valid (run_id={config.run_id}, iterations={config.iterations}, hash={config.config_hash()})")


@config_app.command("show")
@handle_errors
def show(config: Path = ConfigOption, overrides: list[str] = SetOption) -> None:
    """Print the effective configuration, defaults included, as YAML."""
    effective = load_run_config(config, overrides)
    Console().print(Syntax(effective.to_yaml(), "yaml", theme="ansi_dark", background_color="default"))


@config_app.command("reference")
def reference() -> None:
    """Print the configuration reference (Markdown) generated from the config models."""
    typer.echo(config_reference_markdown(), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
