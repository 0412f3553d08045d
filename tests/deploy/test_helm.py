"""The Helm chart: lint, each template under its values, and the same objects as Kustomize."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import CHART, COMPILED, by_kind_and_name, render_registration, run_tool
from tests.fixtures.k8s_validation import validate_object

DEFAULT_OBJECTS = {
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


def values_schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def test_the_default_values_satisfy_the_schema():
    jsonschema.Draft7Validator.check_schema(values_schema())
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), values_schema())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bogus": 1}, "Additional properties are not allowed"),
        (
            {"trainer": {"runtime": {"create": True, "name": "x"}, "image": "ghcr.io/selflengthen/trainer:latest"}},
            "should not be valid",
        ),
        ({"minio": {"enabled": "yes"}}, "is not of type 'boolean'"),
        ({"trainer": {"runtime": {"create": True, "name": "x"}, "image": "a:b", "shmSize": "64GB"}}, "does not match"),
    ],
)
def test_the_schema_rejects_bad_values(values, message):
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(values, values_schema())


def test_every_value_is_documented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or line.startswith(" " * 6):
            continue  # comments, and the contents of example maps (resources)
        before = lines[index - 1].strip() if index else ""
        is_group = stripped.endswith(":")
        assert is_group or before.startswith("#"), f"values.yaml line {index + 1} has no comment: {line!r}"


@pytest.mark.integration
def test_helm_lint_is_clean(helm_bin: Path):
    for values in ([], ["--set", "minio.enabled=true", "--set", "trainer.nodeSelector.pool=gpu"]):
        result = run_tool(helm_bin, "lint", "--strict", CHART, *values)
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("minio.image=quay.io/minio/minio:latest", "minio/image"),  # outside the schema
        ("registration.enabled=true", "--set-file registration.pipeline="),  # registration without the pipeline
    ],
)
def test_helm_refuses_bad_values(helm_bin: Path, value: str, message: str):
    result = subprocess.run(
        [str(helm_bin), "template", "x", str(CHART), "--set", value], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.integration
def test_default_objects_are_valid(helm_template):
    objects = helm_template()
    assert set(by_kind_and_name(objects)) == DEFAULT_OBJECTS
    for obj in objects:
        validate_object(obj)
        assert obj["metadata"]["namespace"] == "selflengthen"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.integration
def test_serviceaccount_and_rbac_templates(helm_template):
    objects = by_kind_and_name(
        helm_template(
            "runner.serviceAccount.create=false",
            "runner.serviceAccount.name=kubeflow-runner",
            "runner.rbac.argoExecutor=false",
            "commonLabels.team=ml",
        )
    )
    assert ("ServiceAccount", "kubeflow-runner") not in objects
    # fixed names: a profile's own RoleBinding is called default-editor, the account the runs may use
    role, binding = objects[("Role", "selflengthen-runner")], objects[("RoleBinding", "selflengthen-runner")]
    assert all(rule["apiGroups"] != ["argoproj.io"] for rule in role["rules"])
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubeflow-runner", "namespace": "selflengthen"}]
    assert role["metadata"]["labels"]["team"] == "ml"
    without_rbac = by_kind_and_name(helm_template("runner.rbac.create=false"))
    assert not {(kind, name) for kind, name in without_rbac if name == "selflengthen-runner"} & {("Role", "selflengthen-runner"), ("RoleBinding", "selflengthen-runner")}


@pytest.mark.integration
def test_rbac_is_namespaced_and_reads_only_the_artifact_secret(helm_template):
    objects = helm_template("minio.enabled=true")
    assert not {obj["kind"] for obj in objects} & {"ClusterRole", "ClusterRoleBinding"}
    roles = [obj for obj in objects if obj["kind"] == "Role"]
    assert len(roles) == 2
    for rule in (rule for role in roles for rule in role["rules"]):
        assert "*" not in rule["resources"] + rule["verbs"]
        # one Secret, by name: the KFP artifact store's, which the launcher reads (tests/deploy/test_rbac.py)
        assert "secrets" not in rule["resources"] or (rule["resourceNames"] == ["mlpipeline-minio-artifact"] and rule["verbs"] == ["get"])


@pytest.mark.integration
def test_the_janitor_cronjob_runs_gc_with_only_what_it_needs(helm_template):
    objects = by_kind_and_name(helm_template("janitor.schedule=*/5 * * * *"))
    cronjob, role = objects[("CronJob", "selflengthen-janitor")], objects[("Role", "selflengthen-janitor")]
    validate_object(cronjob)
    assert cronjob["spec"]["schedule"] == "*/5 * * * *" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["selflengthen", "gc"]
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert pod["serviceAccountName"] == "selflengthen-janitor" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True
    verbs = {(group, resource): set(rule["verbs"]) for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert verbs == {
        ("apps", "deployments"): {"list", "delete"},
        ("", "services"): {"list", "delete"},
        ("trainer.kubeflow.org", "trainjobs"): {"list", "delete"},
        ("argoproj.io", "workflows"): {"get", "list"},
    }
    assert ("CronJob", "selflengthen-janitor") not in by_kind_and_name(helm_template("janitor.enabled=false"))


@pytest.mark.integration
def test_networkpolicy_template(helm_template):
    assert not [
        obj
        for obj in helm_template("networkPolicy.enabled=false", "minio.enabled=true")
        if obj["kind"] == "NetworkPolicy"
    ]
    policies = by_kind_and_name(helm_template("minio.enabled=true"))
    assert policies[("NetworkPolicy", "selflengthen-model-server")]["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8000}
    ]
    assert policies[("NetworkPolicy", "selflengthen-minio")]["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 9000}
    ]


@pytest.mark.integration
def test_trainingruntime_template(helm_template):
    objects = by_kind_and_name(
        helm_template(
            "trainer.runtime.name=ds",
            "trainer.image=registry.local/trainer:1.2.3",
            "trainer.shmSize=8Gi",
            "trainer.nodeSelector.pool=gpu",
            "trainer.tolerations[0].key=nvidia.com/gpu",
            "trainer.tolerations[0].operator=Exists",
        )
    )
    runtime = objects[("TrainingRuntime", "ds")]
    validate_object(runtime)
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.local/trainer:1.2.3"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["volumes"][1]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert ("TrainingRuntime", "selflengthen-deepspeed") not in by_kind_and_name(
        helm_template("trainer.runtime.create=false")
    )


@pytest.mark.integration
def test_minio_template(helm_template):
    objects = by_kind_and_name(
        helm_template("minio.enabled=true", "storage.secretName=my-s3", "minio.persistence.storageClassName=fast")
    )
    for obj in objects.values():
        validate_object(obj)
    deployment = objects[("Deployment", "selflengthen-minio")]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {item["valueFrom"]["secretKeyRef"]["name"] for item in env} == {"my-s3"}
    assert objects[("PersistentVolumeClaim", "selflengthen-minio")]["spec"]["storageClassName"] == "fast"


@pytest.mark.integration
def test_notes_tell_how_to_configure_a_run(helm_bin: Path):
    result = run_tool(
        helm_bin,
        "install",
        "selflengthen",
        CHART,
        "--namespace",
        "team-a",
        "--dry-run=client",
        "--set",
        "minio.enabled=true",
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "create secret generic selflengthen-s3" in notes
    assert "namespace: team-a" in notes and "s3_endpoint: selflengthen-minio.team-a.svc:9000" in notes
    assert "run_namespace" not in notes  # multi-user: the runs' pods are in team-a
    standalone = run_tool(helm_bin, "install", "selflengthen", CHART, "--namespace", "team-a", "--dry-run=client", "--set", "kubeflow.mode=standalone")
    assert "       run_namespace: kubeflow\n       service_account: pipeline-runner" in standalone.stdout.split("NOTES:", 1)[1]


@pytest.mark.integration
def test_helm_and_kustomize_install_the_same_objects(helm_template, kustomize):
    """The chart with MinIO and the dev overlay differ in labels only (the Namespace aside)."""
    from_helm = by_kind_and_name(helm_template("minio.enabled=true", namespace="selflengthen-dev"))
    from_kustomize = by_kind_and_name([obj for obj in kustomize("overlays/dev") if obj["kind"] != "Namespace"])
    assert set(from_helm) == set(from_kustomize)
    for key, obj in from_helm.items():
        other = from_kustomize[key]
        assert obj["metadata"]["namespace"] == other["metadata"]["namespace"]
        for field in ("spec", "rules", "roleRef", "subjects"):
            assert obj.get(field) == other.get(field), f"{key}: {field} differs"


@pytest.mark.integration
def test_the_registration_job_uploads_the_compiled_pipeline_on_every_sync(helm_bin: Path):
    objects = render_registration(helm_bin)
    for key in [("ConfigMap", "selflengthen-pipeline"), ("ServiceAccount", "selflengthen-register"), ("Role", "selflengthen-register"),
                ("NetworkPolicy", "selflengthen-register"), ("Job", "selflengthen-register")]:  # fmt: skip
        validate_object(objects[key])
    assert objects[("ConfigMap", "selflengthen-pipeline")]["data"]["selflengthen.yaml"] == COMPILED.read_text()
    job = objects[("Job", "selflengthen-register")]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade" and annotations["argocd.argoproj.io/hook"] == "PostSync"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["selflengthen", "register", "--pipeline", "/pipeline/selflengthen.yaml"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["KF_PIPELINES_ENDPOINT"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    (token,) = [volume for volume in pod["volumes"] if volume["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert pod["serviceAccountName"] == "selflengthen-register" and pod["automountServiceAccountToken"] is False
    assert objects[("Role", "selflengthen-register")]["rules"] == [
        {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["pipelines", "pipelines/versions"], "verbs": ["create", "get", "list"]}
    ]
    standalone = render_registration(helm_bin, "kubeflow.mode=standalone", "registration.host=https://kfp.example.com")
    assert ("Role", "selflengthen-register") not in standalone  # standalone KFP authorizes no one
    (container,) = standalone[("Job", "selflengthen-register")]["spec"]["template"]["spec"]["containers"]
    assert {item["name"]: item.get("value") for item in container["env"]}["KF_PIPELINES_ENDPOINT"] == "https://kfp.example.com"


@pytest.mark.integration
def test_the_model_cache_pvc_is_read_write_many(helm_template):
    objects = by_kind_and_name(helm_template("modelCache.create=true", "modelCache.storageClassName=nfs"))
    claim = objects[("PersistentVolumeClaim", "selflengthen-models")]
    validate_object(claim)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "nfs"
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
