"""The `selflengthen` command: a thin layer over the library. Each command group lives in its own module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-Lengthen: teach an LLM to write long answers.")

# module name -> how it attaches: modules expose `register(app)`.
_COMMAND_MODULES = ("config_cmd", "stages_cmd", "tiny_cmd", "train_cmd", "eval_cmd", "pipeline_cmd")

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"selflengthen.cli.{_name}")
    except ModuleNotFoundError as error:  # a command group not built yet
        if error.name != f"selflengthen.cli.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    app()
