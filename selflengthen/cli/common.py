"""Helpers shared by the command modules: config loading and error reporting."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer
import yaml

from selflengthen.config import ConfigError, RunConfig, default_config_path, load_config
from selflengthen.errors import SelfLengthenError
from selflengthen.storage import Storage

F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = typer.Option(
    None, "--config", "-c", help="run config YAML (default: the packaged selflengthen/configs/tiny-local.yaml)"
)
SetOption = typer.Option([], "--set", help="override a config value: dotted.key=value (value parsed as YAML)")


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn SelfLengthenError (and bad-input OSErrors) into 'error: ...' on stderr and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SelfLengthenError as error:
            fail(str(error))
        except KeyboardInterrupt:
            typer.echo("interrupted; finished records are checkpointed, rerun to resume", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def check_file_writable(storage: Storage, uri: str) -> None:
    """Fail now, not after the work, when the folder of the output file ``uri`` cannot be written."""
    folder, sep, _ = uri.rpartition("/")
    storage.check_writable(folder or ("/" if sep else "."))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``; values are parsed as YAML."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_run_config(path: Path | None, overrides: list[str] | None = None) -> RunConfig:
    """The config at ``path`` (or the local default) with ``--set`` overrides applied."""
    return load_config(path or default_config_path(), parse_overrides(overrides or []))
