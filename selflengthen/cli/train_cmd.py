"""`selflengthen train`: fine-tune one role on one iteration's SFT examples (docs/method.md, step 7).

The same command runs in one process, under torchrun (``python -m selflengthen.training`` takes
the same arguments) and in a Kubeflow Trainer job; ``--nproc-per-node N`` starts N local
processes through torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import typer

from selflengthen.cli.common import ConfigOption, SetOption, handle_errors, load_run_config
from selflengthen.config import Role

_SUMMARY_KEYS = (
    "role", "method", "steps", "resumed_from_step", "train_loss", "tokens_per_s", "non_padding_fraction",
    "examples", "peak_memory", "output",
)  # fmt: skip


@handle_errors
def train_command(
    role: Role = typer.Option(..., "--role", help="which role to train: generator or extender"),
    data: str = typer.Option(..., "--data", help="SFT examples: a dataset prefix or a JSONL file (local path or s3://)"),
    base_model: str = typer.Option(..., "--base-model", help="base model folder (local path or s3://)"),
    output: str = typer.Option(..., "--output", help="output folder (local path or s3://); a rerun resumes there"),
    adapter_from: str = typer.Option(None, "--adapter-from", help="previous iteration's LoRA adapter (or its training output) to continue"),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, help="processes on this machine (torchrun)"),
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Fine-tune one role (LoRA or full, DeepSpeed presets, resumable) and write adapter/model, metrics.json, COMPLETE."""
    from selflengthen.training.launch import TrainingRequest

    request = TrainingRequest(role=role, data_uri=data, base_model_uri=base_model, output_uri=output, adapter_from_uri=adapter_from)
    if nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        from selflengthen.training.launch import local_torchrun_command

        arguments = request.arguments(config_path=str(config) if config else None, overrides=overrides)
        raise typer.Exit(subprocess.run(local_torchrun_command(arguments, nproc_per_node), check=False).returncode)

    from selflengthen.training import train_role

    cfg = load_run_config(config, overrides)
    metrics = train_role(cfg, **request.keywords())
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(json.dumps({key: metrics.get(key) for key in _SUMMARY_KEYS}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
