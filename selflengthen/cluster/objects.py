"""What every Kubernetes object created by a step shares.

* Names and labels: one deterministic name per (run, role, iteration), so a retried step finds
  what its last attempt created, and labels (``app.kubernetes.io/*``, ``selflengthen.io/run-id``,
  ``role``, ``iteration``) by which teardown finds them again.
* Owner references, the run's Workflow and the lease: :mod:`selflengthen.cluster.ownership`.
* Pod security: non-root, no privilege escalation, every capability dropped, RuntimeDefault
  seccomp, read-only root file system (writable emptyDirs where a program needs them).
* Credentials: S3 keys reach containers only as env ``secretKeyRef`` to the Secret named by
  ``pipeline.storage_secret``; they never appear in arguments, labels or logs.
* API errors: :func:`api_errors` turns the client's exceptions into one of the project's errors,
  with a message naming the action, the object and what to check; :func:`wait_for` polls until a
  condition holds or time runs out, riding out transient API failures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from selflengthen.config import RunConfig
from selflengthen.errors import SelfLengthenError

log = logging.getLogger(__name__)

T = TypeVar("T")

PART_OF = "selflengthen"
LABEL_RUN = "selflengthen.io/run-id"
LABEL_ROLE = "selflengthen.io/role"
LABEL_ITERATION = "selflengthen.io/iteration"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "app.kubernetes.io/instance"

# The unprivileged user every pod runs as (the project's images create it; the upstream vLLM
# image runs under any uid once HOME points at a writable folder).
RUN_AS_USER = 10001

# Keys of the Secret named by pipeline.storage_secret.
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Key of the Secret named by pipeline.api_key_secret (the model servers' API key).
API_KEY_SECRET_KEY = "SELFLENGTHEN_API_KEY"
# Key of the Secret named by serving.cluster.hf_token_secret (the Hugging Face Hub token).
HF_TOKEN_SECRET_KEY = "HF_TOKEN"
# Env var carrying the StorageConfig (endpoint, TLS, region; no credentials) as JSON.
STORAGE_CONFIG_ENV = "SELFLENGTHEN_STORAGE_CONFIG"

_LOCAL_PREFIXES = ("file://", "/", "./", "../", "~")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
_STATUS_HINTS = {
    401: "the API server refused the credentials (service account token or kubeconfig)",
    403: "forbidden: the service account lacks an RBAC permission (see the chart's Role, manifests/base/rbac.yaml)",
    404: "not found: check the namespace, and that Kubeflow Trainer's CRDs are installed for TrainJobs",
    409: "conflict: the object exists already or was changed meanwhile",
    422: "the API server rejected the object as invalid",
}


# --------------------------------------------------------------------------- names and labels


def object_name(run_id: str, role: str, iteration: int, *, max_length: int = 63) -> str:
    """``sl-<run>-<role>-it<k>``: a DNS-1035 label (starts with a letter), shortened with a hash."""
    name = f"sl-{run_id}-{role}-it{iteration}"
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: max_length - len(digest) - 1].rstrip('-')}-{digest}"


def object_labels(run_id: str, role: str, iteration: int, *, name: str, app: str, component: str) -> dict[str, str]:
    """Labels of one object (and its pods): recommended app labels plus the run's coordinates."""
    return {
        "app.kubernetes.io/name": app,
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": PART_OF,
        LABEL_RUN: run_id,
        LABEL_ROLE: role,
        LABEL_ITERATION: str(iteration),
    }


def label_selector(run_id: str, component: str, role: str | None = None, iteration: int | None = None) -> str:
    """A selector for one run's objects of one component, optionally narrowed to a role / iteration."""
    parts = {LABEL_RUN: run_id, LABEL_COMPONENT: component, LABEL_ROLE: role, LABEL_ITERATION: iteration}
    return ",".join(f"{key}={value}" for key, value in parts.items() if value is not None)


# --------------------------------------------------------------------------- pods


def model_source(uri: str, error_type: type[SelfLengthenError]) -> str:
    """Where a pod reads ``uri`` from: ``"s3"`` (object storage) or ``"hub"`` (a Hugging Face id).

    A local path is refused: it names a file on the pipeline pod, not on the pods it creates.
    """
    if uri.startswith("s3://"):
        return "s3"
    if uri.startswith(_LOCAL_PREFIXES) or not _HUB_ID.match(uri):
        raise error_type(
            f"{uri!r} is a path on the pipeline pod, which cluster pods cannot read: "
            "use an s3:// URI (a model may also be a Hugging Face id)"
        )
    return "hub"


def container_security_context() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
    )


def pod_security_context() -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        fs_group=RUN_AS_USER,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def secret_env(name: str, secret: str, key: str) -> k8s.V1EnvVar:
    """An env var read by the kubelet from a Secret's key (the value never enters the spec)."""
    return k8s.V1EnvVar(
        name=name, value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(name=secret, key=key))
    )


def storage_credentials_env(config: RunConfig) -> list[k8s.V1EnvVar]:
    """The S3 credentials from ``pipeline.storage_secret``, under the env names ``storage`` gives."""
    names = (config.storage.access_key_env, config.storage.secret_key_env)
    return [
        secret_env(name, config.pipeline.storage_secret, key)
        for name, key in zip(names, STORAGE_SECRET_KEYS, strict=True)
    ]


# Where model servers and trainers mount the PVC of execution.model_cache_pvc.
MODEL_CACHE_DIR = "/model-cache"
MODEL_CACHE_VOLUME = "model-cache"


def model_cache_volume(config: RunConfig) -> k8s.V1Volume | None:
    """The shared model cache (``execution.model_cache_pvc``) as a pod volume, or None."""
    claim = config.execution.model_cache_pvc
    if not claim:
        return None
    return k8s.V1Volume(name=MODEL_CACHE_VOLUME, persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim))


def model_cache_mounts(config: RunConfig, *, read_only: bool) -> list[k8s.V1VolumeMount]:
    """Its mount (none without the cache): read-only but in the container that fills it."""
    if not config.execution.model_cache_pvc:
        return []
    return [k8s.V1VolumeMount(name=MODEL_CACHE_VOLUME, mount_path=MODEL_CACHE_DIR, read_only=read_only)]


def model_cache_env(config: RunConfig) -> list[k8s.V1EnvVar]:
    """What tells selflengthen.modelio to keep model folders there (none without the cache)."""
    from selflengthen.modelio import MODEL_CACHE_ENV

    return [k8s.V1EnvVar(name=MODEL_CACHE_ENV, value=MODEL_CACHE_DIR)] if config.execution.model_cache_pvc else []


def tolerations(values: list[dict[str, Any]]) -> list[k8s.V1Toleration]:
    """Config tolerations (camelCase mappings, checked by the config) as client objects."""
    return [
        k8s.V1Toleration(
            key=value.get("key"),
            operator=value.get("operator"),
            value=value.get("value"),
            effect=value.get("effect"),
            toleration_seconds=value.get("tolerationSeconds"),
        )
        for value in values
    ]


def to_manifest(obj: Any) -> Any:
    """A client model object as the API's JSON (camelCase keys, no nulls)."""
    return k8s.ApiClient().sanitize_for_serialization(obj)


# --------------------------------------------------------------------------- the API


def kube_api_client(error_type: type[SelfLengthenError], context: str | None = None) -> k8s.ApiClient:
    """A client for the cluster this code runs in (service account), else the local kubeconfig
    (its ``context``, default the current one)."""
    configuration = k8s.Configuration()
    try:
        if context:
            raise ConfigException("a kubeconfig context was asked for")
        kube_config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        try:
            kube_config.load_kube_config(client_configuration=configuration, context=context)
        except (ConfigException, OSError) as error:
            raise error_type(f"no Kubernetes API to talk to: not in a pod and no usable kubeconfig ({error})") from None
    return k8s.ApiClient(configuration)


def is_transient(error: Exception) -> bool:
    """Errors worth another try: throttling, server errors, dropped connections."""
    if isinstance(error, ApiException):
        return error.status in _TRANSIENT_STATUSES
    return isinstance(error, urllib3.exceptions.HTTPError)


def describe_api_error(error: Exception, action: str) -> str:
    """One line: what was tried, the HTTP status, what it means, and what the server said."""
    if not isinstance(error, ApiException):
        return f"{action}: the Kubernetes API could not be reached ({error})"
    detail = error.reason or ""
    try:
        status = json.loads(error.body or "")
    except (TypeError, ValueError):
        status = None
    if isinstance(status, dict):
        detail = status.get("message") or detail
        causes = (status.get("details") or {}).get("causes") or []
        fields = "; ".join(f"{cause.get('field', '?')}: {cause.get('message', '')}" for cause in causes)
        if fields and fields not in detail:
            detail = f"{detail} ({fields})"
    hint = _STATUS_HINTS.get(error.status, "the API server failed" if error.status and error.status >= 500 else "")
    return f"{action}: HTTP {error.status}{' - ' + hint if hint else ''}. Server said: {detail}"


@contextmanager
def api_errors(error_type: type[SelfLengthenError], action: str) -> Iterator[None]:
    """Turn the client's exceptions raised inside into ``error_type`` naming ``action``."""
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError) as error:
        raise error_type(describe_api_error(error, action)) from None


def create_or_replace(create: Callable[..., T], replace: Callable[..., T], namespace: str, body: Any) -> T:
    """Create an object; when it exists (409), replace it with ``body`` (idempotent retries)."""
    try:
        return create(namespace, body)
    except ApiException as error:
        if error.status != 409:
            raise
    return replace(body.metadata.name, namespace, body)


def delete_if_present(
    delete: Callable[..., Any], name: str, namespace: str, *, propagation: str = "Background"
) -> bool:
    """Delete an object and its dependents; whether it was there (a missing one, 404, is fine)."""
    try:
        delete(name, namespace, propagation_policy=propagation)
    except ApiException as error:
        if error.status != 404:
            raise
        return False
    return True


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float,
    action: str,
    error_type: type[SelfLengthenError],
) -> T | None:
    """Call ``check`` until it returns a value (returned) or ``timeout_s`` passes (None).

    ``check`` raises to fail at once; transient API errors are logged and retried, others become
    ``error_type`` naming ``action``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            if not is_transient(error):
                raise error_type(describe_api_error(error, action)) from None
            log.warning("%s: transient API error, retrying: %s", action, error)
            result = None
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)
