"""The serve and teardown steps on Kubernetes: a vLLM Deployment + Service per model server (principle 6).

:func:`build_model_server` describes the objects (kubernetes client models, nothing sent);
:func:`serve_role_in_cluster` creates or replaces them, waits until the Deployment has rolled out
and returns the in-cluster base URL (``http://<name>.<namespace>.svc:8000/v1``);
:func:`teardown_role_in_cluster` deletes a run's servers by label.

The pod:

* ``fetch-model`` init container (the runtime image): copies the base model and/or the LoRA
  adapter from object storage into an emptyDir (``/models``), or with ``execution.model_cache_pvc``
  into the shared model cache once per content and links ``/models/...`` to it (the cache is
  mounted read-write here, read-only in the vLLM container); S3 credentials from the Secret
  ``pipeline.storage_secret`` as env ``secretKeyRef``. A base model given as a Hugging Face id is
  downloaded by vLLM itself instead (token from ``serving.cluster.hf_token_secret`` when set);
  with ``serving.cluster.stream_from_s3`` an s3:// model is streamed by vLLM itself
  (``--load-format runai_streamer``) and only adapters are fetched.
* ``vllm`` container: the pinned upstream image, ``--model /models/base`` (or the id), the names
  and LoRA adapters of the server's plan (:mod:`selflengthen.serving.plan`): a role's server
  answers to the role's model name (with an adapter: ``--enable-lora --lora-modules
  <name>=/models/adapters/<name>``, the base as ``<name>-base``); the shared server
  (``serving.layout`` shared) serves the base under ``serving.base_model_name`` and each role as
  its adapter, or under its name while it is the base. Then context length, tensor parallelism.
  ``serving.cluster.replicas`` pods serve behind the one Service. The API key, when
  ``pipeline.api_key_secret`` is set, reaches vLLM as env ``VLLM_API_KEY`` from that Secret.
* Non-root (uid 10001), no privilege escalation, capabilities dropped, read-only root; HOME and
  every cache live on an emptyDir at ``/tmp``; ``/dev/shm`` is a memory emptyDir.
* startup/readiness/liveness probes on ``/health``; GPUs, CPU and memory limits; node selector
  and tolerations from ``serving.cluster``; emptyDirs and ephemeral storage sized by
  ``serving.cluster.model_storage``; owned by the run's Workflow, with a lease
  (:mod:`selflengthen.cluster.ownership`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from selflengthen.cluster.objects import (
    API_KEY_SECRET_KEY,
    HF_TOKEN_SECRET_KEY,
    LABEL_INSTANCE,
    STORAGE_CONFIG_ENV,
    STORAGE_SECRET_KEYS,
    api_errors,
    container_security_context,
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
    pod_security_context,
    secret_env,
    storage_credentials_env,
    tolerations,
    wait_for,
)
from selflengthen.cluster.pods import FailFast, pod_problems
from selflengthen.cluster.ownership import NO_OWNER, RunOwner, lease_patch, run_owner
from selflengthen.config import RunConfig
from selflengthen.errors import EndpointError, SelfLengthenError
from selflengthen.serving.plan import ServerName, ServerPlan

log = logging.getLogger(__name__)

COMPONENT = "model-server"
PORT = 8000
MODELS_DIR = "/models"
BASE_DIR = f"{MODELS_DIR}/base"
ADAPTERS_DIR = f"{MODELS_DIR}/adapters"
SCRATCH_DIR = "/tmp"


@dataclass(frozen=True)
class ModelServer:
    """The objects of one model server and how clients reach it."""

    name: str
    namespace: str
    base_url: str
    served_model: str
    deployment: k8s.V1Deployment
    service: k8s.V1Service


def build_model_server(
    config: RunConfig, server: ServerName, iteration: int, plan: ServerPlan, *, owner: RunOwner = NO_OWNER
) -> ModelServer:
    """The Deployment (``serving.cluster.replicas`` pods) and Service of the model server ``server``
    (a role's, or the one shared by the roles), loading what ``plan`` says."""
    namespace = config.pipeline.namespace
    name = object_name(config.run_id, server, iteration)
    labels = object_labels(config.run_id, server, iteration, name=name, app="vllm", component=COMPONENT)
    base_from_s3 = model_source(plan.model, EndpointError) == "s3"
    streamed = base_from_s3 and config.serving.cluster.stream_from_s3
    for _, adapter_uri in plan.adapters:
        if model_source(adapter_uri, EndpointError) != "s3":
            raise EndpointError(f"LoRA adapter {adapter_uri!r} must be on object storage (s3://) to be served in the cluster")
    adapter_dirs = {uri: f"{ADAPTERS_DIR}/{adapter}" for adapter, uri in plan.adapters}
    downloads = [(plan.model, BASE_DIR)] if base_from_s3 and not streamed else []
    downloads += list(adapter_dirs.items())

    metadata = owner.metadata(config)
    metadata.name, metadata.namespace, metadata.labels = name, namespace, labels
    storage = config.serving.cluster.model_storage
    cache = model_cache_volume(config)
    model = BASE_DIR if base_from_s3 and not streamed else plan.model
    loader = ["--load-format", "runai_streamer"] if streamed else []
    model_args = ["--model", model, *loader, *plan.vllm_args(config, adapter_dirs.__getitem__)]
    pod = k8s.V1PodSpec(
        containers=[_vllm_container(config, model_args)],
        init_containers=[_fetch_container(config, downloads)] if downloads else None,
        volumes=([cache] if cache else []) + [
            # with the model cache, only links to it (the fetch container makes them)
            k8s.V1Volume(name="models", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Mi" if cache else storage)),
            k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=storage)),
            k8s.V1Volume(
                name="shm",
                empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=config.serving.cluster.shm_size),
            ),
        ],
        security_context=pod_security_context(),
        node_selector=config.serving.cluster.node_selector or None,
        tolerations=tolerations(config.serving.cluster.tolerations) or None,
        automount_service_account_token=False,
        enable_service_links=False,
    )
    deployment = k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=metadata,
        spec=k8s.V1DeploymentSpec(
            replicas=config.serving.cluster.replicas,
            selector=k8s.V1LabelSelector(match_labels={LABEL_INSTANCE: name}),
            # Recreate: a rolling update would need a second set of GPUs.
            strategy=k8s.V1DeploymentStrategy(type="Recreate"),
            progress_deadline_seconds=math.ceil(config.serving.cluster.ready_timeout_s),
            revision_history_limit=1,
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )
    service = k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=metadata,
        spec=k8s.V1ServiceSpec(
            type="ClusterIP",
            selector={LABEL_INSTANCE: name},
            ports=[k8s.V1ServicePort(name="http", port=PORT, target_port="http", protocol="TCP")],
        ),
    )
    base_url = f"http://{name}.{namespace}.svc:{PORT}/v1"
    return ModelServer(name, namespace, base_url, plan.names[0], deployment, service)


def _vllm_container(config: RunConfig, model_args: list[str]) -> k8s.V1Container:
    cluster = config.serving.cluster
    args = [
        *model_args,
        "--host", "0.0.0.0",  # inside the pod: the Service reaches it on the pod IP (local servers bind 127.0.0.1)
        "--port", str(PORT),
        "--max-model-len", str(cluster.max_model_len),
        "--tensor-parallel-size", str(cluster.tensor_parallel_size),
        "--gpu-memory-utilization", str(cluster.gpu_memory_utilization),
    ]  # fmt: skip
    model = model_args[1]
    env = [
        k8s.V1EnvVar(name="HOME", value=SCRATCH_DIR),
        k8s.V1EnvVar(name="USER", value="vllm"),  # getpass.getuser() fails for a uid without a passwd entry
        k8s.V1EnvVar(name="VLLM_NO_USAGE_STATS", value="1"),
    ]
    if model.startswith(MODELS_DIR):
        env.append(k8s.V1EnvVar(name="HF_HUB_OFFLINE", value="1"))
    if model.startswith("s3://"):
        env += _streamer_env(config)
    if cluster.hf_token_secret:
        env.append(secret_env("HF_TOKEN", cluster.hf_token_secret, HF_TOKEN_SECRET_KEY))
    if config.pipeline.api_key_secret:
        env.append(secret_env("VLLM_API_KEY", config.pipeline.api_key_secret, API_KEY_SECRET_KEY))
    # the downloaded model and vLLM's caches live on emptyDirs: request the node disk they need
    resources = {"cpu": cluster.cpu, "memory": cluster.memory, "ephemeral-storage": cluster.model_storage}
    if cluster.gpus:
        resources["nvidia.com/gpu"] = str(cluster.gpus)
    return k8s.V1Container(
        name="vllm",
        image=cluster.image,
        image_pull_policy="IfNotPresent",
        command=["python3", "-m", "vllm.entrypoints.openai.api_server"],
        args=args,
        env=env,
        ports=[k8s.V1ContainerPort(name="http", container_port=PORT, protocol="TCP")],
        resources=k8s.V1ResourceRequirements(requests=resources, limits=resources),
        startup_probe=_health_probe(period_s=10, failures=math.ceil(cluster.ready_timeout_s / 10)),
        readiness_probe=_health_probe(period_s=10, failures=3),
        liveness_probe=_health_probe(period_s=30, failures=3),
        security_context=container_security_context(),
        termination_message_policy="FallbackToLogsOnError",
        volume_mounts=[
            k8s.V1VolumeMount(name="models", mount_path=MODELS_DIR, read_only=True),
            k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH_DIR),
            k8s.V1VolumeMount(name="shm", mount_path="/dev/shm"),
            *model_cache_mounts(config, read_only=True),
        ],
    )


def _streamer_env(config: RunConfig) -> list[k8s.V1EnvVar]:
    """What vLLM's Run:ai Model Streamer needs to read ``s3://`` from the configured endpoint
    (``serving.cluster.stream_from_s3``). vLLM 0.32.0 pulls the folder's config and tokenizer
    files with ``runai_model_streamer.pull_files`` and streams its safetensors
    (vllm/config/model.py maybe_pull_model_tokenizer_for_runai,
    vllm/model_executor/model_loader/runai_streamer_loader.py); its S3 client takes the AWS SDK's
    env: the credentials under their standard names, ``AWS_ENDPOINT_URL`` (the loader copies it
    into ``RUNAI_STREAMER_S3_ENDPOINT`` only with --model-loader-extra-config, so both are set),
    path-style addressing for S3-compatible stores and no EC2 metadata lookup (vLLM docs, "Loading
    models with Run:ai Model Streamer"). The vllm-openai image installs runai-model-streamer[s3]
    (vllm-project/vllm docker/Dockerfile, stage vllm-openai-base)."""
    storage = config.storage
    endpoint = f"{'https' if storage.s3_secure else 'http'}://{storage.s3_endpoint}"
    env = [secret_env(key, config.pipeline.storage_secret, key) for key in STORAGE_SECRET_KEYS]
    env += [
        k8s.V1EnvVar(name="AWS_ENDPOINT_URL", value=endpoint),
        k8s.V1EnvVar(name="RUNAI_STREAMER_S3_ENDPOINT", value=endpoint),
        k8s.V1EnvVar(name="RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING", value="0"),
        k8s.V1EnvVar(name="AWS_EC2_METADATA_DISABLED", value="true"),
    ]
    if storage.s3_region:
        env.append(k8s.V1EnvVar(name="AWS_DEFAULT_REGION", value=storage.s3_region))
    return env


def _fetch_container(config: RunConfig, downloads: list[tuple[str, str]]) -> k8s.V1Container:
    resources = {"cpu": "1", "memory": "1Gi"}
    return k8s.V1Container(
        name="fetch-model",
        image=config.pipeline.image,
        image_pull_policy="IfNotPresent",
        command=["python", "-m", "selflengthen.cluster.fetch"],
        args=[f"{uri}={folder}" for uri, folder in downloads],
        env=[
            k8s.V1EnvVar(name="HOME", value=SCRATCH_DIR),
            k8s.V1EnvVar(name=STORAGE_CONFIG_ENV, value=config.storage.model_dump_json()),
            *storage_credentials_env(config),
            *model_cache_env(config),
        ],
        resources=k8s.V1ResourceRequirements(requests=resources, limits=resources),
        security_context=container_security_context(),
        termination_message_policy="FallbackToLogsOnError",
        volume_mounts=[
            k8s.V1VolumeMount(name="models", mount_path=MODELS_DIR),
            k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH_DIR),
            *model_cache_mounts(config, read_only=False),  # the one writer: it fills the cache
        ],
    )


def _health_probe(*, period_s: int, failures: int) -> k8s.V1Probe:
    return k8s.V1Probe(
        http_get=k8s.V1HTTPGetAction(path="/health", port="http"),
        period_seconds=period_s,
        timeout_seconds=5,
        failure_threshold=failures,
    )


# --------------------------------------------------------------------------- the API calls


def serve_role_in_cluster(
    config: RunConfig,
    server: ServerName,
    iteration: int,
    plan: ServerPlan,
    *,
    api_client: k8s.ApiClient | None = None,
    poll_interval_s: float = 5.0,
) -> str:
    """Create (or replace) the model server ``server`` (a role's, or the shared one) loading what
    ``plan`` says, wait until every replica serves, return its base URL.

    Idempotent: a retried step replaces the objects of its previous attempt. When the server
    cannot start (a fatal pod state, the progress deadline, ``serving.cluster.ready_timeout_s``)
    its objects are deleted, so the GPUs are freed, and EndpointError says why.
    """
    api = api_client or kube_api_client(EndpointError)
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    namespace = config.pipeline.namespace
    built = build_model_server(config, server, iteration, plan, owner=run_owner(core, namespace))
    where = f"{namespace}/{built.name}"
    with api_errors(EndpointError, f"creating Service {where}"):
        create_or_replace(core.create_namespaced_service, core.replace_namespaced_service, namespace, built.service)
    with api_errors(EndpointError, f"creating Deployment {where}"):
        create_or_replace(
            apps.create_namespaced_deployment, apps.replace_namespaced_deployment, namespace, built.deployment
        )
    log.info("waiting for model server %s (%s) to become ready", where, server)
    fail_fast = FailFast(config.execution)

    def rolled_out() -> bool | None:
        deployment = apps.read_namespaced_deployment(built.name, namespace)
        if _rolled_out(deployment):
            return True
        cause = fail_fast.check(core, namespace, built.name)
        if cause:
            raise EndpointError(f"model server {where} cannot start: {cause}")
        for condition in (deployment.status and deployment.status.conditions) or []:
            if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
                summary = _problem_summary(core, namespace, built.name)
                raise EndpointError(f"model server {where} did not become ready: {condition.message}{summary}")
        return None

    try:
        ready = wait_for(
            rolled_out,
            timeout_s=config.serving.cluster.ready_timeout_s,
            interval_s=poll_interval_s,
            action=f"waiting for Deployment {where}",
            error_type=EndpointError,
        )
        if not ready:
            timeout = config.serving.cluster.ready_timeout_s
            raise EndpointError(
                f"model server {where} not ready after {timeout:g} s (serving.cluster.ready_timeout_s)"
                f"{_problem_summary(core, namespace, built.name)}"
            )
    except EndpointError as error:
        log.error("%s", error)
        try:
            teardown_role_in_cluster(config, server, iteration, api_client=api)
        except SelfLengthenError as cleanup_error:
            log.warning("could not delete the failed model server %s: %s", where, cleanup_error)
        raise
    log.info("model server %s ready at %s", where, built.base_url)
    return built.base_url


def renew_server_lease(config: RunConfig, server: ServerName, iteration: int, *, api_client: k8s.ApiClient | None = None) -> None:
    """Move the lease of the model server ``server`` (Deployment and Service) to ``execution.lease_s``
    from now: a step using the server calls it, so ``selflengthen gc`` leaves the server alone."""
    api = api_client or kube_api_client(EndpointError)
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    namespace, name = config.pipeline.namespace, object_name(config.run_id, server, iteration)
    patch = lease_patch(config)
    with api_errors(EndpointError, f"renewing the lease of model server {namespace}/{name}"):
        apps.patch_namespaced_deployment(name, namespace, patch)
        core.patch_namespaced_service(name, namespace, patch)


def teardown_role_in_cluster(
    config: RunConfig,
    server: ServerName | None = None,
    iteration: int | None = None,
    *,
    api_client: k8s.ApiClient | None = None,
) -> list[str]:
    """Delete the run's model servers (all, or one server's / one iteration's); ``Kind/name`` deleted.

    Idempotent: objects already gone (404) are skipped.
    """
    api = api_client or kube_api_client(EndpointError)
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    namespace = config.pipeline.namespace
    selector = label_selector(config.run_id, COMPONENT, server, iteration)
    deleted = []
    with api_errors(EndpointError, f"deleting model servers ({selector}) in namespace {namespace}"):
        for kind, list_objects, delete in (
            ("Deployment", apps.list_namespaced_deployment, apps.delete_namespaced_deployment),
            ("Service", core.list_namespaced_service, core.delete_namespaced_service),
        ):
            for item in list_objects(namespace, label_selector=selector).items:
                if delete_if_present(delete, item.metadata.name, namespace):
                    deleted.append(f"{kind}/{item.metadata.name}")
    log.info("deleted %s", ", ".join(deleted) or "nothing")
    return deleted


def _rolled_out(deployment: k8s.V1Deployment) -> bool:
    """What ``kubectl rollout status`` waits for: the current spec's replicas all available."""
    status = deployment.status or k8s.V1DeploymentStatus()
    wanted = deployment.spec.replicas or 1
    updated = status.updated_replicas or 0
    return (
        (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
        and updated >= wanted
        and (status.replicas or 0) == updated
        and (status.available_replicas or 0) >= wanted
    )


def _problem_summary(core: k8s.CoreV1Api, namespace: str, name: str) -> str:
    """``: <problems>`` for an error message, or nothing when there are none (or they are unknown)."""
    try:
        problems = [problem.describe() for problem in pod_problems(core, namespace, name)]
    except (ApiException, HTTPError) as error:
        return f" (pod states unknown: {error})"
    return f": {'; '.join(problems)}" if problems else ""
