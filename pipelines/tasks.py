"""What every task of the graph gets from the run config: image, resources, retries, caching,
secrets, the run id, the step pod's coordinates, placement.

Kubernetes-only settings go through kfp-kubernetes (secrets as env, node selectors, tolerations,
security context) and KFP resource fields (GPUs): they compile into the cluster pipeline and
kfp.local ignores them.
"""

from __future__ import annotations

from typing import Any

from kfp import kubernetes
from kfp.dsl import PipelineTask

import components
from selflengthen.cluster.objects import API_KEY_SECRET_KEY, HF_TOKEN_SECRET_KEY, MODEL_CACHE_DIR
from selflengthen.cluster.ownership import POD_FIELDS
from selflengthen.config import RunConfig, StepResources
from selflengthen.modelio import MODEL_CACHE_ENV

# Seconds before the first retry of a failed step; each further retry waits twice as long.
RETRY_BACKOFF = "15s"
RETRY_BACKOFF_MAX = "300s"
# The step pod's scratch emptyDir (``StepResources.scratch``), its TMPDIR: Python's tempfile, so
# finalize's spill and model downloads, write there. The KFP driver turns the compiled
# emptyDirMounts into a pod volume with its sizeLimit (kubeflow/pipelines
# backend/src/v2/driver/k8s.go, extendPodSpecPatch, "EmptyDirMounts").
SCRATCH_VOLUME = "scratch"
SCRATCH_DIR = "/scratch"


def configure(
    task: PipelineTask, config: RunConfig, *, cache: bool = True, calls_model: bool = False, resources: StepResources | None = None
) -> PipelineTask:
    """Image, resources (on Kubeflow also the scratch emptyDir at TMPDIR), retries, caching
    (``cache`` False for steps with side effects), secrets as env, non-root.

    ``calls_model``: the step sends requests to a model server (gets the API key secret when set).
    ``resources``: CPU and memory of the step's pod (default: ``execution.steps``).
    """
    task.set_container_image(config.pipeline.image)
    resources = resources or config.execution.steps
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    if config.execution.target == "kubeflow":
        kubernetes.empty_dir_mount(task, volume_name=SCRATCH_VOLUME, mount_path=SCRATCH_DIR, size_limit=resources.scratch)
        task.set_env_variable("TMPDIR", SCRATCH_DIR)
    task.set_retry(config.pipeline.retries, backoff_duration=RETRY_BACKOFF, backoff_max_duration=RETRY_BACKOFF_MAX)
    task.set_caching_options(config.pipeline.caching and cache)
    kubernetes.set_security_context(task, run_as_non_root=True)
    if config.storage.s3_endpoint:
        kubernetes.use_secret_as_env(
            task,
            secret_name=config.pipeline.storage_secret,
            secret_key_to_env={
                "AWS_ACCESS_KEY_ID": config.storage.access_key_env,
                "AWS_SECRET_ACCESS_KEY": config.storage.secret_key_env,
            },
        )
    if calls_model and config.pipeline.api_key_secret:
        for env in sorted({endpoint.api_key_env for endpoint in (config.serving.generator, config.serving.extender, config.serving.judge)}):
            kubernetes.use_secret_as_env(task, secret_name=config.pipeline.api_key_secret, secret_key_to_env={API_KEY_SECRET_KEY: env})
    return task


def use_hub_token(task: PipelineTask, config: RunConfig, env: str = HF_TOKEN_SECRET_KEY) -> PipelineTask:
    """A step that reads from or pushes to the Hugging Face Hub gets key HF_TOKEN of
    ``serving.cluster.hf_token_secret`` (when set) as env ``env``."""
    if config.serving.cluster.hf_token_secret:
        kubernetes.use_secret_as_env(task, secret_name=config.serving.cluster.hf_token_secret, secret_key_to_env={HF_TOKEN_SECRET_KEY: env})
    return task


def place_inline_training(task: PipelineTask, config: RunConfig) -> PipelineTask:
    """The train step that trains itself on Kubeflow (``execution.training`` inline): the trainer
    image (CUDA torch, DeepSpeed; the runtime image has CPU-only torch), its GPUs and placement
    (the step runs torchrun with one process per GPU). A step that creates a TrainJob, or a local
    run, keeps the runtime image: the TrainJob carries its own placement."""
    if config.execution.target != "kubeflow" or config.execution.training != "inline":
        return task
    task.set_container_image(config.trainjob.image)
    if config.trainjob.gpus_per_node:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(config.trainjob.gpus_per_node)
    for key, value in sorted(config.trainjob.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in config.trainjob.tolerations:
        # add_toleration_json reads snake_case keys and would drop tolerationSeconds
        # (kfp-kubernetes 2.17.3, kfp/kubernetes/toleration.py): pass each field by name
        kubernetes.add_toleration(
            task,
            key=toleration.get("key"),
            operator=toleration.get("operator", "Equal"),
            value=toleration.get("value"),
            effect=toleration.get("effect"),
            toleration_seconds=toleration.get("tolerationSeconds"),
        )
    return mount_model_cache(task, config)


def mount_model_cache(task: PipelineTask, config: RunConfig) -> PipelineTask:
    """The inline train step reads the base model and adapters from the shared model cache
    (``execution.model_cache_pvc``) as TrainJobs do: the PVC at the same folder, named by env
    SELFLENGTHEN_MODEL_CACHE (selflengthen.modelio.localize; an entry still missing is filled).

    Only where the step pod can mount it: a pod mounts PVCs of its own namespace, and the PVC is in
    ``pipeline.namespace``; standalone KFP runs its step pods in its own namespace
    (``pipeline.run_namespace``), where the step keeps copying the model into its own cache.
    The mount is read-write: kfp-kubernetes 2.17.3 ``mount_pvc`` and its ``PvcMount`` message
    have no read-only field (mount_path, sub_path, the claim name), and the KFP driver builds the
    volume mount from those alone (kubeflow/pipelines backend/src/v2/driver/k8s.go,
    makeVolumeMountPatch: Name, MountPath, SubPath)."""
    if not config.execution.model_cache_pvc or config.pipeline.steps_namespace != config.pipeline.namespace:
        return task
    kubernetes.mount_pvc(task, pvc_name=config.execution.model_cache_pvc, mount_path=MODEL_CACHE_DIR)
    return task.set_env_variable(MODEL_CACHE_ENV, MODEL_CACHE_DIR)


def knows_its_pod(task: PipelineTask) -> PipelineTask:
    """Env POD_NAME, POD_UID, POD_NAMESPACE from the downward API: a step that creates cluster
    objects reads its own pod to find the run's Workflow, their owner (selflengthen.cluster.ownership)."""
    for env, field_path in POD_FIELDS.items():
        kubernetes.use_field_path_as_env(task, env_name=env, field_path=field_path)
    return task


class Tasks:
    """Makes the configured tasks of one (sub-)pipeline: every step gets the run config JSON, the
    run's id (the identify-run step's output, so KFP caching keys on it and two runs share nothing)
    and the settings above; serve, teardown and train have their display names and placement."""

    def __init__(self, config: RunConfig, config_json: Any, run_id: Any):
        self.config = config
        self.config_json = config_json
        self.run_id = run_id

    def step(
        self, component: Any, *, cache: bool = True, calls_model: bool = False, resources: StepResources | None = None, **arguments: Any
    ) -> PipelineTask:
        task = component(config_json=self.config_json, run_id=self.run_id, **arguments)
        return configure(task, self.config, cache=cache, calls_model=calls_model, resources=resources)

    def generation(self, component: Any, **arguments: Any) -> PipelineTask:
        """A step that sends requests to a served model."""
        return self.step(component, calls_model=True, **arguments)

    def serve(self, phase: str, server: str, models: dict[str, Any]) -> PipelineTask:
        """Start the model server ``server`` for the roles' ``models`` (base, generator, extender; "" for none)."""
        task = knows_its_pod(self.step(components.serve, cache=False, phase=phase, server=server, **models))
        return task.set_display_name(f"serve {server}")

    def teardown(self, phase: str, server: str, users: list[PipelineTask]) -> PipelineTask:
        """Stop the server once every step using it (``users``) is done."""
        task = self.step(components.teardown, cache=False, phase=phase, server=server)
        return task.set_display_name(f"teardown {server}").after(*users)

    def train(self, phase: str, role: str, data: Any, previous: Any) -> PipelineTask:
        task = self.step(components.train, resources=self.config.execution.train_step, phase=phase, role=role, data=data, previous=previous)
        return place_inline_training(knows_its_pod(task), self.config).set_display_name(f"train {role}")
