"""The Kustomize base and overlays render, and every object is valid."""

from __future__ import annotations

import pytest

from selflengthen.config import PipelineConfig
from tests.deploy.conftest import COMPILED, by_kind_and_name, render_registration
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

# manifests/components/registration and model-cache, which the prod overlay uses
REGISTRATION_OBJECTS = {
    ("ConfigMap", "selflengthen-pipeline"),
    ("ServiceAccount", "selflengthen-register"),
    ("Role", "selflengthen-register"),
    ("RoleBinding", "selflengthen-register"),
    ("NetworkPolicy", "selflengthen-register"),
    ("Job", "selflengthen-register"),
}
MODEL_CACHE_OBJECTS = {("PersistentVolumeClaim", "selflengthen-models")}


@pytest.mark.parametrize(
    ("folder", "namespace", "expected"),
    [
        ("base", "selflengthen", BASE_OBJECTS),
        ("overlays/prod", "selflengthen", BASE_OBJECTS | REGISTRATION_OBJECTS | MODEL_CACHE_OBJECTS),
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


def test_the_registration_and_model_cache_components_are_the_charts(helm_bin, kustomize):
    """The components install what the chart does with registration.enabled and modelCache.create
    (labels and Helm's own hook annotations aside): the same Job, command, image, account,
    Role, policy and PVC, and the ConfigMap holds the compiled pipeline as it is in git."""
    from_helm = render_registration(helm_bin, "modelCache.create=true", namespace="selflengthen")
    from_kustomize = by_kind_and_name(kustomize("overlays/prod"))
    for key in sorted(REGISTRATION_OBJECTS | MODEL_CACHE_OBJECTS):
        chart, component = from_helm[key], from_kustomize[key]
        if key[0] == "Job":  # Helm re-runs its hook when the pipeline changes; Argo CD re-creates the hook on every sync
            assert set(chart["spec"]["template"]["metadata"].pop("annotations")) == {"checksum/pipeline"}
            argocd = {name: value for name, value in chart["metadata"]["annotations"].items() if name.startswith("argocd.argoproj.io/")}
            assert component["metadata"]["annotations"] == argocd == {
                "argocd.argoproj.io/hook": "PostSync", "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation,HookSucceeded",
            }  # fmt: skip
        for field in ("spec", "rules", "roleRef", "subjects", "data", "automountServiceAccountToken"):
            assert chart.get(field) == component.get(field), f"{key}: {field} differs from the chart's"
    assert from_kustomize[("ConfigMap", "selflengthen-pipeline")]["data"] == {"selflengthen.yaml": COMPILED.read_text()}
