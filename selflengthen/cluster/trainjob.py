"""The train step on Kubernetes: one Kubeflow Trainer v2 TrainJob per role and iteration (principle 7).

:func:`build_trainjob` describes the TrainJob (``trainer.kubeflow.org/v1alpha1``, a plain dict);
:func:`run_trainjob` creates it, polls its status conditions until ``Complete`` or ``Failed``
and fails with the job's own reason and message.

The job runs on the TrainingRuntime ``trainjob.runtime`` (the chart's ``selflengthen-deepspeed``:
torchrun, DeepSpeed, non-root pods). Its trainer runs ``torchrun -m selflengthen.training`` with
the arguments of ``selflengthen train``; the torch runtime sets the ``PET_*`` variables torchrun
reads (nodes, processes per node, rendezvous), so the command names none of them.

The run's configuration reaches the trainer as a ConfigMap ``<job>-config`` (key ``config.json``,
no secrets: the config holds only the *names* of credential env vars), mounted read-only at
``/etc/selflengthen`` through the job's ``runtimePatches``. The ConfigMap is created right after
the job and owned by it, so it goes when the job goes; the pods wait for the volume until it
exists. S3 credentials reach the trainer as env ``secretKeyRef`` to ``pipeline.storage_secret``.

A retried step finds the job of its previous attempt by name: a running or complete one is
adopted (watched, not recreated), a failed one is deleted and created anew.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from selflengthen.cluster.objects import (
    HF_TOKEN_SECRET_KEY,
    api_errors,
    create_or_replace,
    delete_if_present,
    kube_api_client,
    label_selector,
    model_cache_env,
    model_cache_mounts,
    model_cache_volume,
    model_source,
    object_labels,
    object_name,
    secret_env,
    storage_credentials_env,
    to_manifest,
    tolerations,
    wait_for,
)
from selflengthen.cluster.pods import FailFast
from selflengthen.cluster.ownership import NO_OWNER, RunOwner, lease_kept, lease_patch, run_owner
from selflengthen.config import RunConfig
from selflengthen.errors import TrainingError
from selflengthen.training.launch import TrainingRequest, trainjob_command

log = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
COMPONENT = "trainer"
NODE = "node"  # the torch runtime's replicated job and its trainer container
CONFIG_DIR = "/etc/selflengthen"
CONFIG_FILE = "config.json"
CONFIG_VOLUME = "selflengthen-config"
PATCH_MANAGER = "selflengthen.io/train-step"
# The TrainJob spec fields build_trainjob sets. runtimePatches and activeDeadlineSeconds first came in
# Kubeflow Trainer v2.2.0 (kubeflow/trainer pkg/apis/trainer/v1alpha1/trainjob_types.go and
# manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml at tag v2.2.0; v2.1.0 has neither, its
# podTemplateOverrides has another shape): the oldest Trainer the TrainJobs run on.
SPEC_FIELDS = ("runtimeRef", "activeDeadlineSeconds", "trainer", "runtimePatches")
MIN_TRAINER_VERSION = "v2.2.0"
# TrainJob names stay short: the JobSet derives pod host names (<job>-node-<i>-<j>) from them.
MAX_NAME_LENGTH = 40
DELETE_TIMEOUT_S = 300.0


def build_trainjob(
    config: RunConfig, iteration: int, request: TrainingRequest, *, owner: RunOwner = NO_OWNER
) -> dict[str, Any]:
    """The TrainJob running ``request`` (a role's fine-tuning), owned by ``owner``."""
    for what, uri in (("data", request.data_uri), ("output", request.output_uri), ("adapter", request.adapter_from_uri)):
        if uri is not None and model_source(uri, TrainingError) != "s3":
            raise TrainingError(f"the TrainJob's {what} must be on object storage (s3://), got {uri!r}")
    hub_model = model_source(request.base_model_uri, TrainingError) == "hub"
    trainjob = config.trainjob
    role = request.role
    name = object_name(config.run_id, role, iteration, max_length=MAX_NAME_LENGTH)
    labels = object_labels(config.run_id, role, iteration, name=name, app="selflengthen-trainer", component=COMPONENT)

    env = storage_credentials_env(config) + model_cache_env(config)
    if hub_model and config.serving.cluster.hf_token_secret:
        env.append(secret_env("HF_TOKEN", config.serving.cluster.hf_token_secret, HF_TOKEN_SECRET_KEY))
    command = trainjob_command(request.arguments(config_path=f"{CONFIG_DIR}/{CONFIG_FILE}"))
    trainer: dict[str, Any] = {
        "image": trainjob.image,
        "command": command,
        "numNodes": trainjob.num_nodes,
        "numProcPerNode": max(trainjob.gpus_per_node, 1),
        "env": to_manifest(env),
    }
    # Host memory (ZeRO-3 offload) and scratch for the model download are requested per node; GPUs
    # are requested and limited. Only trainer.resourcesPerNode sets resources: runtimePatches may not
    # (Trainer API, trainjob_types.go, ContainerPatch has name, env, securityContext, volumeMounts).
    requests = {"memory": trainjob.memory, "ephemeral-storage": trainjob.scratch_size}
    limits = {"memory": trainjob.memory, "ephemeral-storage": trainjob.scratch_size}
    if trainjob.gpus_per_node:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(trainjob.gpus_per_node)
    trainer["resourcesPerNode"] = {"requests": requests, "limits": limits}

    # the shared model cache, read-only: a server of the run filled it; a missing entry is
    # downloaded to the trainer's scratch instead (selflengthen.modelio.localize)
    cache = model_cache_volume(config)
    pod_spec: dict[str, Any] = {
        "volumes": [{"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(name)}}, *to_manifest([cache] if cache else [])],
        "containers": [
            {"name": NODE, "volumeMounts": [
                {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
                *to_manifest(model_cache_mounts(config, read_only=True)),
            ]}
        ],
    }  # fmt: skip
    if trainjob.node_selector:
        pod_spec["nodeSelector"] = dict(trainjob.node_selector)
    if trainjob.tolerations:
        pod_spec["tolerations"] = to_manifest(tolerations(trainjob.tolerations))
    pod_patch = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
    runtime_patch = {
        "template": {"spec": {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": pod_patch}}}]}}
    }

    metadata: dict[str, Any] = {"name": name, "namespace": config.pipeline.namespace, "labels": labels}
    metadata.update(to_manifest(owner.metadata(config)))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": trainjob.runtime_kind, "name": trainjob.runtime},
            "activeDeadlineSeconds": math.ceil(trainjob.timeout_s),
            "trainer": trainer,
            "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": runtime_patch}],
        },
    }


def config_map_name(trainjob_name: str) -> str:
    return f"{trainjob_name}-config"


def build_config_map(config: RunConfig, trainjob: dict[str, Any]) -> k8s.V1ConfigMap:
    """The run's configuration for the trainer, owned by the (created) TrainJob."""
    metadata = trainjob["metadata"]
    owner = k8s.V1OwnerReference(
        api_version=trainjob["apiVersion"],
        kind=trainjob["kind"],
        name=metadata["name"],
        uid=metadata["uid"],
        block_owner_deletion=False,
    )
    return k8s.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=k8s.V1ObjectMeta(
            name=config_map_name(metadata["name"]),
            namespace=metadata["namespace"],
            labels=metadata.get("labels"),
            owner_references=[owner],
        ),
        data={CONFIG_FILE: config.to_json()},
    )


def trainjob_condition(trainjob: dict[str, Any], condition_type: str) -> dict[str, Any] | None:
    """The job's condition of that type when it holds (status "True"), else None."""
    for condition in (trainjob.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type and condition.get("status") == "True":
            return condition
    return None


def run_trainjob(
    config: RunConfig,
    iteration: int,
    request: TrainingRequest,
    *,
    api_client: k8s.ApiClient | None = None,
    poll_interval_s: float = 30.0,
) -> dict[str, Any]:
    """Run the TrainJob to its end; the finished TrainJob, or TrainingError with the job's reason.

    After ``trainjob.timeout_s`` the job is deleted (its GPUs freed) and TrainingError says so;
    the job itself carries the same limit as ``activeDeadlineSeconds``, in case this step dies.
    """
    api = api_client or kube_api_client(TrainingError)
    custom, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
    namespace = config.pipeline.namespace
    owner = run_owner(core, namespace)
    job = build_trainjob(config, iteration, request, owner=owner)
    name = job["metadata"]["name"]
    where = f"{namespace}/{name}"
    with api_errors(TrainingError, f"creating TrainJob {where}"):
        created = _create_or_adopt(custom, namespace, job, owner.adoption(config))
    with api_errors(TrainingError, f"creating ConfigMap {config_map_name(name)} for TrainJob {where}"):
        config_map = build_config_map(config, created)
        create_or_replace(core.create_namespaced_config_map, core.replace_namespaced_config_map, namespace, config_map)
    log.info("TrainJob %s created; waiting for it to finish", where)

    last_percentage = None
    fail_fast = FailFast(config.execution)

    def finished() -> dict[str, Any] | None:
        nonlocal last_percentage
        current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        failed = trainjob_condition(current, "Failed")
        if failed is not None:
            raise TrainingError(
                f"TrainJob {where} failed ({failed.get('reason', 'no reason given')}): "
                f"{failed.get('message', '')} -- logs: kubectl logs -n {namespace} -l app.kubernetes.io/instance={name}"
            )
        if trainjob_condition(current, "Complete") is not None:
            return current
        # the Trainer does not fail a job whose pods cannot start (a JobSet counts failed pods
        # only): the step reads the trainer pods itself (labelled by the job's runtimePatches)
        cause = fail_fast.check(core, namespace, name)
        if cause:
            with api_errors(TrainingError, f"deleting TrainJob {where}, whose pods cannot start"):
                _delete_trainjob(custom, namespace, name)
            log.error("TrainJob %s cannot start: %s", where, cause)
            raise TrainingError(f"TrainJob {where} cannot start (it was deleted): {cause}")
        percentage = ((current.get("status") or {}).get("trainerStatus") or {}).get("progressPercentage")
        if percentage is not None and percentage != last_percentage:
            last_percentage = percentage
            log.info("TrainJob %s: %s%% done", where, percentage)
        return None

    def renew() -> None:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, lease_patch(config))

    # created or adopted with a fresh lease; renewed while this step watches (selflengthen gc spares it)
    with lease_kept(renew, config.execution.lease_s / 4, f"TrainJob {where}", renew_now=False):
        result = wait_for(
            finished,
            timeout_s=config.trainjob.timeout_s,
            interval_s=poll_interval_s,
            action=f"watching TrainJob {where}",
            error_type=TrainingError,
        )
    if result is None:
        with api_errors(TrainingError, f"deleting TrainJob {where} after its timeout"):
            _delete_trainjob(custom, namespace, name)
        raise TrainingError(
            f"TrainJob {where} did not finish within {config.trainjob.timeout_s:g} s (trainjob.timeout_s); it was deleted"
        )
    log.info("TrainJob %s complete", where)
    return result


# field_validation Strict: a Trainer older than v2.2 (no runtimePatches, activeDeadlineSeconds)
# refuses the job naming the field instead of pruning it silently (structural pruning; the API's
# default is Warn).
def _create_or_adopt(custom: k8s.CustomObjectsApi, namespace: str, job: dict[str, Any], adoption: dict[str, Any]) -> dict[str, Any]:
    """Create the job; adopt a running or complete one of the same name (``adoption``: the merge
    patch making it this attempt's: owner and lease), replace a failed one."""
    name = job["metadata"]["name"]
    try:
        return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job, field_validation="Strict")
    except ApiException as error:
        if error.status != 409:
            raise
    existing = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    if trainjob_condition(existing, "Failed") is None:
        log.info("TrainJob %s/%s exists from a previous attempt: adopting it", namespace, name)
        # metadata only: spec.trainer is immutable (Trainer API, trainjob_types.go)
        return custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, adoption)
    log.info("TrainJob %s/%s of a previous attempt failed: creating it anew", namespace, name)
    _delete_trainjob(custom, namespace, name)

    def gone() -> bool | None:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return None

    deleted = wait_for(
        gone,
        timeout_s=DELETE_TIMEOUT_S,
        interval_s=2.0,
        action=f"deleting TrainJob {namespace}/{name}",
        error_type=TrainingError,
    )
    if not deleted:
        raise TrainingError(f"the failed TrainJob {namespace}/{name} was not deleted within {DELETE_TIMEOUT_S:g} s")
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job, field_validation="Strict")


def _delete_trainjob(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> None:
    """Delete the job with its JobSet and pods (foreground); already gone is fine."""

    def delete(name: str, namespace: str, **options: Any) -> None:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, **options)

    delete_if_present(delete, name, namespace, propagation="Foreground")


def delete_run_trainjobs(config: RunConfig, *, api_client: k8s.ApiClient | None = None) -> list[str]:
    """Delete every TrainJob of the run (by label, with its JobSet and pods); ``TrainJob/name`` deleted."""
    api = api_client or kube_api_client(TrainingError)
    custom = k8s.CustomObjectsApi(api)
    namespace = config.pipeline.namespace
    selector = label_selector(config.run_id, COMPONENT)
    deleted = []
    with api_errors(TrainingError, f"deleting TrainJobs ({selector}) in namespace {namespace}"):
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=selector)
        for item in listed.get("items") or []:
            name = item["metadata"]["name"]
            _delete_trainjob(custom, namespace, name)
            deleted.append(f"TrainJob/{name}")
    return deleted
