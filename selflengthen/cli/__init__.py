"""The `selflengthen` command: a thin layer over the library. Each command group lives in its own module."""

from __future__ import annotations

import typer

from selflengthen.cli import (
    config_cmd, doctor_cmd, eval_cmd, export_cmd, gc_cmd, pipeline_cmd, stages_cmd, submit_cmd, tiny_cmd, train_cmd, upload_cmd,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-Lengthen: teach an LLM to write long answers.")

for _module in (config_cmd, stages_cmd, tiny_cmd, train_cmd, eval_cmd, pipeline_cmd, upload_cmd, submit_cmd, doctor_cmd, export_cmd, gc_cmd):
    _module.register(app)


def main() -> None:
    app()
