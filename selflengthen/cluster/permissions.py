"""Every Kubernetes permission a run needs, in one place: what the steps' code calls, what the KFP
launcher and Argo executor of each step pod do, and what the janitor calls.

``selflengthen doctor`` asks the API server, by SubjectAccessReview, whether the run's service
account holds each of them; the deployment tests check that the chart's and the overlays' Roles
grant each of them, and that every Kubernetes call in the package maps to one of them
(:func:`permission_of`), so a new API call without a rule fails a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from selflengthen.config import RunConfig


@dataclass(frozen=True, order=True)
class Permission:
    """One verb on one resource (of an API group; "" is the core group), optionally one object."""

    group: str
    resource: str
    verb: str
    name: str | None = None

    def describe(self) -> str:
        kind = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {kind}" + (f"/{self.name}" if self.name else "")


def _permissions(group: str, resource: str, *verbs: str) -> tuple[Permission, ...]:
    return tuple(Permission(group, resource, verb) for verb in verbs)


# The steps' own calls (serving/cluster.py, cluster/trainjob.py, pods.py, ownership.py).
STEP_PERMISSIONS = (
    *_permissions("apps", "deployments", "create", "get", "update", "patch", "list", "delete"),
    *_permissions("", "services", "create", "update", "patch", "list", "delete"),
    *_permissions("", "configmaps", "create", "update"),
    *_permissions("", "pods", "get", "list"),
    *_permissions("", "pods/log", "get"),
    *_permissions("", "events", "list"),
    *_permissions("trainer.kubeflow.org", "trainjobs", "create", "get", "patch", "list", "delete"),
)

# The janitor's calls (cluster/janitor.py), under its own account.
JANITOR_PERMISSIONS = (
    *_permissions("apps", "deployments", "list", "delete"),
    *_permissions("", "services", "list", "delete"),
    *_permissions("trainer.kubeflow.org", "trainjobs", "list", "delete"),
    *_permissions("argoproj.io", "workflows", "get"),
)

# What the KFP machinery in each step pod does under the run's account:
# * the Argo executor reports outputs as WorkflowTaskResults (argo-workflows v3.4+);
# * the KFP launcher and driver read the object-store credentials Secret of the pipeline root by
#   name in the run's namespace (kubeflow/pipelines backend/src/v2/objectstore/object_store.go,
#   getS3BucketCredential: Secrets(namespace).Get) and the ``kfp-launcher`` ConfigMap (its
#   defaultPipelineRoot and providers).
LAUNCHER_CONFIGMAP = "kfp-launcher"


def launcher_permissions(artifact_secret: str) -> tuple[Permission, ...]:
    return (
        *_permissions("argoproj.io", "workflowtaskresults", "create", "patch"),
        Permission("", "secrets", "get", artifact_secret),
        Permission("", "configmaps", "get", LAUNCHER_CONFIGMAP),
    )


def run_permissions(config: RunConfig, artifact_secret: str) -> tuple[Permission, ...]:
    """What the run's service account needs: the steps' calls (TrainJobs only with
    ``execution.training: trainjob``) and the KFP launcher's."""
    steps = tuple(
        permission for permission in STEP_PERMISSIONS
        if config.execution.training == "trainjob" or permission.resource not in ("trainjobs", "configmaps")
    )  # fmt: skip
    return steps + launcher_permissions(artifact_secret)


# --------------------------------------------------------------------------- calls -> permissions

_CALL = re.compile(r"^(create|read|get|list|patch|replace|delete)_namespaced_(\w+)$")
_VERBS = {"create": "create", "read": "get", "get": "get", "list": "list", "patch": "patch", "replace": "update", "delete": "delete"}
_KINDS = {
    "deployment": ("apps", "deployments"),
    "service": ("", "services"),
    "config_map": ("", "configmaps"),
    "pod": ("", "pods"),
    "pod_log": ("", "pods/log"),
    "event": ("", "events"),
    "secret": ("", "secrets"),
    "service_account": ("", "serviceaccounts"),
}


def permission_of(method: str, custom_resource: tuple[str, str] | None = None) -> Permission | None:
    """The permission a namespaced call of the kubernetes client needs: ``create_namespaced_service``
    -> create services; a ``*_namespaced_custom_object`` call needs ``custom_resource`` (group,
    plural). None for a method that is not a namespaced call."""
    match = _CALL.match(method)
    if not match:
        return None
    verb, kind = _VERBS[match.group(1)], match.group(2)
    if kind == "custom_object":
        if custom_resource is None:
            raise ValueError(f"{method}: the custom resource (group, plural) is needed")
        return Permission(custom_resource[0], custom_resource[1], verb)
    if kind not in _KINDS:
        raise ValueError(f"{method}: unknown kind {kind!r}: add it to selflengthen/cluster/permissions.py")
    return Permission(*_KINDS[kind], verb)
