"""Configs and process checks shared by the orchestration and pipeline tests."""

import os

from selflengthen.config import RunConfig, parse_config


def run_config(workdir: str, **overrides: object) -> RunConfig:
    """A small valid config with artefacts below ``workdir``; ``overrides`` are top-level sections."""
    data = {"run_id": "unit", "workdir": workdir, "iterations": 2, "languages": ["en"], "model": {"base": "/models/base"}}
    data.update(overrides)
    return parse_config(data)


def alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
