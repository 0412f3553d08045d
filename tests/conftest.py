"""Shared fixtures (each real part has its own fixture module under tests/fixtures/), and the rule
that a skipped test fails the run: a missing install step must show, not hide behind a skip."""

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.tiny",
    "tests.fixtures.model_server",
    "tests.fixtures.scripted_server",
    "tests.fixtures.vllm_server",
    "tests.fixtures.k8s_tools",
    "tests.fixtures.browser",
    "tests.fixtures.hub",
    "tests.fixtures.kfp_api",
]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(f"{skipped} test(s) skipped: every test must run (see the skip reasons above)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _compiled_ops_cache() -> None:
    """DeepSpeed compiles a few CPU ops on first use (about a minute each): one cache in the
    repository for every test and the processes they start, so each op is built once."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))
