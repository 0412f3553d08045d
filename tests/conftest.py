"""Shared fixtures. Each real part has its own fixture module under tests/fixtures/."""

import importlib.util

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.s3",
        "tests.fixtures.tiny",
        "tests.fixtures.model_server",
        "tests.fixtures.k8s_tools",
    )
    if importlib.util.find_spec(name) is not None
]
