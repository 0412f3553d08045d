"""Fixtures of the training tests (helpers live in tests/training/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.training.helpers import FACTS, sft_example, write_jsonl


@pytest.fixture
def facts_jsonl(tmp_path: Path) -> str:
    return write_jsonl(tmp_path / "facts.jsonl", [sft_example(i, q, a) for i, (q, a) in enumerate(FACTS)])


@pytest.fixture
def no_launcher_env() -> Iterator[None]:
    """A process that no launcher started (no RANK, WORLD_SIZE, ...); the environment is restored after."""
    saved = dict(os.environ)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)
