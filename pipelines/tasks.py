"""What every task of the graph gets from the run config: image, retries, caching, secrets, placement.

Kubernetes-only settings go through kfp-kubernetes (secrets as env, node selectors, tolerations,
security context) and KFP resource fields (GPUs): they compile into the cluster pipeline and
kfp.local ignores them.
"""

from __future__ import annotations

from typing import Any

from kfp import kubernetes
from kfp.dsl import PipelineTask

import components
from selflengthen.config import RunConfig

# Seconds before the first retry of a failed step; each further retry waits twice as long.
RETRY_BACKOFF = "15s"
RETRY_BACKOFF_MAX = "300s"
API_KEY_SECRET_KEY = "SELFLENGTHEN_API_KEY"


def configure(task: PipelineTask, config: RunConfig, *, cache: bool = True, calls_model: bool = False) -> PipelineTask:
    """Image, retries, caching (``cache`` False for steps with side effects), secrets as env, non-root.

    ``calls_model``: the step sends requests to a model server (gets the API key secret when set).
    """
    task.set_container_image(config.pipeline.image)
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


def place_training(task: PipelineTask, config: RunConfig) -> PipelineTask:
    """GPUs, node selector and tolerations of a train step that trains inline (``trainjob.mode``
    inline); a ``trainjob`` step only creates and watches a TrainJob, which carries them itself."""
    if config.trainjob.mode != "inline" or config.trainjob.gpus_per_node == 0:
        return task
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(config.trainjob.gpus_per_node)
    for key, value in sorted(config.trainjob.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in config.trainjob.tolerations:
        kubernetes.add_toleration_json(task, toleration)
    return task


class Tasks:
    """Makes the configured tasks of one (sub-)pipeline: every step gets the run config JSON and the
    settings above; serve, teardown and train have their display names and placement."""

    def __init__(self, config: RunConfig, config_json: Any, target: Any):
        self.config = config
        self.config_json = config_json
        self.target = target

    def step(self, component: Any, *, cache: bool = True, calls_model: bool = False, **arguments: Any) -> PipelineTask:
        return configure(component(config_json=self.config_json, **arguments), self.config, cache=cache, calls_model=calls_model)

    def generation(self, component: Any, **arguments: Any) -> PipelineTask:
        """A step that sends requests to a served model."""
        return self.step(component, calls_model=True, **arguments)

    def serve(self, phase: str, role: str, model: Any) -> PipelineTask:
        task = self.step(components.serve, cache=False, target=self.target, phase=phase, role=role, model=model)
        return task.set_display_name(f"serve {role}")

    def teardown(self, phase: str, role: str, users: list[PipelineTask]) -> PipelineTask:
        """Stop the server once every step using it (``users``) is done."""
        task = self.step(components.teardown, cache=False, target=self.target, phase=phase, role=role)
        return task.set_display_name(f"teardown {role}").after(*users)

    def train(self, phase: str, role: str, data: Any, previous: Any) -> PipelineTask:
        task = self.step(components.train, phase=phase, role=role, data=data, previous=previous)
        return place_training(task, self.config).set_display_name(f"train {role}")
