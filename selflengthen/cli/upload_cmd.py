"""`selflengthen upload-inputs`: put the base model and the benchmark files where a kubeflow run reads them."""

from __future__ import annotations

from pathlib import Path

import typer

from selflengthen.cli.common import ConfigOption, SetOption, handle_errors, load_run_config
from selflengthen.config import ConfigError


def parse_files(items: list[str]) -> dict[str, Path]:
    files = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--benchmark {item!r}: expected NAME=FILE")
        files[name] = Path(path)
    return files


@handle_errors
def upload_command(
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
    model_dir: Path = typer.Option(None, "--model-dir", help="local model folder (config.json, weights, tokenizer) to copy to model.base"),
    benchmark: list[str] = typer.Option([], "--benchmark", help="NAME=FILE: this file for benchmark NAME (default: the packaged copy)"),
    benchmarks: bool = typer.Option(True, "--benchmarks/--no-benchmarks", help="upload the benchmark files to eval.benchmark_files"),
) -> None:
    """Upload the base model folder to model.base and the benchmark files to eval.benchmark_files
    (s3:// URIs of the config), with this machine's S3 credentials."""
    from selflengthen.cluster.inputs import upload_benchmarks, upload_model
    from selflengthen.storage import get_storage

    cfg = load_run_config(config, overrides)
    storage = get_storage(cfg.storage)
    files = parse_files(benchmark)
    if model_dir is not None:
        written = upload_model(cfg, storage, model_dir)
        typer.echo(f"uploaded {len(written)} file(s) of {model_dir} to {cfg.model.base}")
    if benchmarks:
        for uri in upload_benchmarks(cfg, storage, files):
            typer.echo(f"uploaded benchmark file {uri}")


def register(app: typer.Typer) -> None:
    app.command("upload-inputs")(upload_command)
