"""Shared fixtures (each real part has its own fixture module under tests/fixtures/), how the tests
share two workers, and the rule that a skipped test fails the run: a missing install step must
show, not hide behind a skip."""

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.tiny", "tests.fixtures.model_server", "tests.fixtures.k8s_tools"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(f"{skipped} test(s) skipped: every test must run (see the skip reasons above)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For pytest-xdist's ``--dist loadgroup`` (``make test`` runs two workers): the tests on the
    pre-trained tiny model form one group, so one worker builds it and the other never waits for
    that build, and they come first, since they are the suite's longest chain (build, then e2e)."""
    chain = [item for item in items if "tiny_model_dir" in getattr(item, "fixturenames", ())]
    for item in chain:
        item.add_marker(pytest.mark.xdist_group("tiny-model"))
    grouped = set(chain)
    items[:] = chain + [item for item in items if item not in grouped]


@pytest.fixture(scope="session", autouse=True)
def _compiled_ops_cache() -> None:
    """DeepSpeed compiles a few CPU ops on first use (about a minute each): one cache in the
    repository for every test and the processes they start, so each op is built once."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))
