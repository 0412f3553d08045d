"""Rendering the deployment files: ``helm template`` and ``kubectl kustomize`` (tools from PyPI)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml


ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "selflengthen"
MANIFESTS = ROOT / "manifests"
COMPILED = ROOT / "pipelines" / "compiled" / "selflengthen-cluster.yaml"

Objects = list[dict[str, Any]]


def run_tool(*command: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a tool; a non-zero exit fails the test with its output."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def load_objects(text: str) -> Objects:
    return [document for document in yaml.safe_load_all(text) if document]


@pytest.fixture(scope="session")
def helm_template(helm_bin: Path) -> Callable[..., Objects]:
    """``helm_template("minio.enabled=true", namespace="ns")``: the chart's objects."""

    def render(*values: str, namespace: str = "selflengthen") -> Objects:
        arguments = [argument for value in values for argument in ("--set", value)]
        return load_objects(
            run_tool(helm_bin, "template", "selflengthen", CHART, "--namespace", namespace, *arguments).stdout
        )

    return render


@pytest.fixture(scope="session")
def kustomize(kubectl_bin: Path) -> Callable[[str], Objects]:
    """``kustomize("overlays/dev")``: the objects of a folder of manifests/."""

    def build(folder: str) -> Objects:
        return load_objects(run_tool(kubectl_bin, "kustomize", MANIFESTS / folder).stdout)

    return build


def by_kind_and_name(objects: Objects) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def render_registration(helm_bin: Path, *values: str, namespace: str = "team-a") -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's objects with the registration Job of the compiled pipeline, by kind and name."""
    arguments = [argument for value in values for argument in ("--set", value)]
    result = run_tool(
        helm_bin, "template", "selflengthen", CHART, "--namespace", namespace, "--set", "registration.enabled=true",
        "--set-file", f"registration.pipeline={COMPILED}", *arguments,
    )  # fmt: skip
    return by_kind_and_name(load_objects(result.stdout))
