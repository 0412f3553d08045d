"""The Kustomize base and overlays render, and every object is valid."""

from __future__ import annotations

import pytest

from selflengthen.config import PipelineConfig
from tests.deploy.conftest import by_kind_and_name
from tests.fixtures.k8s_validation import validate_object

pytestmark = pytest.mark.integration

BASE_OBJECTS = {
    ("Namespace", "selflengthen"),
    ("ServiceAccount", "selflengthen-runner"),
    ("Role", "selflengthen-runner"),
    ("RoleBinding", "selflengthen-runner"),
    ("NetworkPolicy", "selflengthen-model-server"),
    ("NetworkPolicy", "selflengthen-trainer"),
    ("TrainingRuntime", "selflengthen-deepspeed"),
    ("ServiceAccount", "selflengthen-janitor"),
    ("Role", "selflengthen-janitor"),
    ("RoleBinding", "selflengthen-janitor"),
    ("CronJob", "selflengthen-janitor"),
}
MINIO_OBJECTS = {
    ("PersistentVolumeClaim", "selflengthen-minio"),
    ("Deployment", "selflengthen-minio"),
    ("Service", "selflengthen-minio"),
    ("NetworkPolicy", "selflengthen-minio"),
}


@pytest.mark.parametrize(
    ("folder", "namespace", "expected"),
    [
        ("base", "selflengthen", BASE_OBJECTS),
        ("overlays/prod", "selflengthen", BASE_OBJECTS),
        ("overlays/standalone", "selflengthen", BASE_OBJECTS - {("ServiceAccount", "selflengthen-runner")}),
        (
            "overlays/multi-user",
            "kubeflow-user-example-com",
            BASE_OBJECTS - {("ServiceAccount", "selflengthen-runner"), ("Namespace", "selflengthen")},
        ),
        (
            "overlays/dev",
            "selflengthen-dev",
            (BASE_OBJECTS - {("Namespace", "selflengthen")}) | {("Namespace", "selflengthen-dev")} | MINIO_OBJECTS,
        ),
    ],
)
def test_every_object_is_valid_and_in_its_namespace(kustomize, folder, namespace, expected):
    objects = kustomize(folder)
    assert set(by_kind_and_name(objects)) == expected
    for obj in objects:
        validate_object(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "selflengthen"
    bindings = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "RoleBinding"}
    assert bindings["selflengthen-janitor"]["subjects"] == [{"kind": "ServiceAccount", "name": "selflengthen-janitor", "namespace": namespace}]
    if ("ServiceAccount", "selflengthen-runner") in expected:  # else: the Kubeflow mode's own account (test_rbac.py)
        assert bindings["selflengthen-runner"]["subjects"] == [{"kind": "ServiceAccount", "name": "selflengthen-runner", "namespace": namespace}]


def test_the_base_namespace_is_the_config_default(kustomize):
    (namespace,) = [obj for obj in kustomize("base") if obj["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == PipelineConfig().namespace
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"


def test_prod_runs_trainers_on_gpu_nodes(kustomize):
    runtime = by_kind_and_name(kustomize("overlays/prod"))[("TrainingRuntime", "selflengthen-deepspeed")]
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_no_secret_is_ever_rendered(kustomize):
    for folder in ("base", "overlays/dev", "overlays/prod", "overlays/standalone", "overlays/multi-user"):
        assert all(obj["kind"] != "Secret" for obj in kustomize(folder))
