"""The RBAC of both Kubeflow modes covers every Kubernetes call the code makes.

The calls are read from the package's source (every ``*_namespaced_*`` method of the kubernetes
client it names), mapped to permissions by selflengthen.cluster.permissions.permission_of and
compared with the registry there; the Roles the chart renders in either mode and the overlays
build must grant each. A new API call without a rule fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from selflengthen.cluster.permissions import (
    JANITOR_PERMISSIONS, LAUNCHER_CONFIGMAP, STEP_PERMISSIONS, Permission, launcher_permissions, permission_of,
)  # fmt: skip
from tests.deploy.conftest import ROOT, by_kind_and_name

PACKAGE = ROOT / "selflengthen"
# Calls made by the person running the command, not by a run's account.
USER_MODULES = {"cluster/doctor.py"}
CUSTOM_RESOURCES = {"PLURAL": ("trainer.kubeflow.org", "trainjobs"), "WORKFLOW_API": ("argoproj.io", "workflows")}
ARTIFACTS = "mlpipeline-minio-artifact"


def calls_in(path: Path) -> set[Permission]:
    """The permissions of the Kubernetes calls in one module (methods called or passed on)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.endswith("_namespaced_custom_object"):
            source = ast.unparse(node)
            resources = {resource for token, resource in CUSTOM_RESOURCES.items() if token in source}
            assert len(resources) == 1, f"{path}: cannot tell the custom resource of {source}: name it in CUSTOM_RESOURCES"
            found.add(permission_of(node.func.attr, resources.pop()))
        elif isinstance(node, ast.Attribute) and not node.attr.endswith("_custom_object"):
            permission = permission_of(node.attr)
            if permission is not None:
                found.add(permission)
    return found


def code_permissions() -> tuple[set[Permission], set[Permission]]:
    steps, janitor = set(), set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module in USER_MODULES:
            continue
        (janitor if module == "cluster/janitor.py" else steps).update(calls_in(path))
    return steps, janitor


def test_the_registry_is_exactly_what_the_code_calls():
    steps, janitor = code_permissions()
    assert steps == set(STEP_PERMISSIONS), f"missing: {steps - set(STEP_PERMISSIONS)}; unused: {set(STEP_PERMISSIONS) - steps}"
    assert janitor == set(JANITOR_PERMISSIONS)


def test_a_new_call_is_mapped_or_refused():
    assert permission_of("create_namespaced_service") == Permission("", "services", "create")
    assert permission_of("replace_namespaced_config_map") == Permission("", "configmaps", "update")
    assert permission_of("read_namespaced_pod_log") == Permission("", "pods/log", "get")
    assert permission_of("list_node") is None
    with pytest.raises(ValueError, match="unknown kind 'stateful_set'"):
        permission_of("create_namespaced_stateful_set")


def grants(role: dict, permission: Permission) -> bool:
    for rule in role["rules"]:
        names = rule.get("resourceNames")
        if (
            permission.group in rule["apiGroups"] and permission.resource in rule["resources"] and permission.verb in rule["verbs"]
            and (not names or permission.name in names)
        ):  # fmt: skip
            return True
    return False


def assert_covers(role: dict, permissions) -> None:
    missing = [permission.describe() for permission in permissions if not grants(role, permission)]
    assert not missing, f"Role {role['metadata']['name']} lacks {missing}"


def secret_rules(role: dict) -> list[dict]:
    return [rule for rule in role["rules"] if "secrets" in rule["resources"] or "*" in rule["resources"]]


@pytest.mark.integration
def test_multi_user_chart_grants_the_steps_and_the_launcher_and_one_secret(helm_template):
    objects = by_kind_and_name(helm_template("runner.serviceAccount.create=false", "runner.serviceAccount.name=default-editor", namespace="team-a"))
    role = objects[("Role", "selflengthen-runner")]
    assert_covers(role, STEP_PERMISSIONS + launcher_permissions(ARTIFACTS))
    assert grants(role, Permission("", "configmaps", "get", LAUNCHER_CONFIGMAP))
    assert secret_rules(role) == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [ARTIFACTS], "verbs": ["get"]}]
    assert objects[("RoleBinding", "selflengthen-runner")]["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": "team-a"}]
    assert_covers(objects[("Role", "selflengthen-janitor")], JANITOR_PERMISSIONS)


@pytest.mark.integration
def test_standalone_chart_binds_kfps_runner_and_admits_the_kfp_namespace(helm_template):
    objects = by_kind_and_name(helm_template("kubeflow.mode=standalone", "minio.enabled=true"))
    role = objects[("Role", "selflengthen-runner")]
    assert_covers(role, STEP_PERMISSIONS)
    assert secret_rules(role) == []
    assert ("ServiceAccount", "selflengthen-runner") not in objects
    assert objects[("RoleBinding", "selflengthen-runner")]["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
    kubeflow = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}
    for policy in ("selflengthen-model-server", "selflengthen-minio"):
        assert kubeflow in objects[("NetworkPolicy", policy)]["spec"]["ingress"][0]["from"]
    assert kubeflow not in objects[("NetworkPolicy", "selflengthen-trainer")]["spec"]["ingress"][0]["from"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("folder", "subject", "launcher"),
    [
        ("base", {"kind": "ServiceAccount", "name": "selflengthen-runner", "namespace": "selflengthen"}, True),
        ("overlays/multi-user", {"kind": "ServiceAccount", "name": "default-editor", "namespace": "kubeflow-user-example-com"}, True),
        ("overlays/standalone", {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}, False),
    ],
)
def test_overlays_bind_the_account_their_runs_use(kustomize, folder, subject, launcher):
    objects = by_kind_and_name(kustomize(folder))
    role = objects[("Role", "selflengthen-runner")]
    assert_covers(role, STEP_PERMISSIONS + (launcher_permissions(ARTIFACTS) if launcher else ()))
    assert bool(secret_rules(role)) is launcher
    assert objects[("RoleBinding", "selflengthen-runner")]["subjects"] == [subject]
    assert_covers(objects[("Role", "selflengthen-janitor")], JANITOR_PERMISSIONS)
