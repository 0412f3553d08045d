"""The serve and teardown steps: bring a model server up, find it, take it down.

A phase's model servers follow ``serving.layout``: one per role (``generator``, ``extender``, and
``base`` for ``self_instruct.model`` base), or one ``shared`` server answering for every role by
model name (:mod:`selflengthen.serving.plan`). A serve step writes a :class:`ServerRecord` at the
layout's deterministic place for its phase and server; the generation steps read it to reach the
server under the model name of their role, a teardown step reads it to stop the server, and a
teardown of the whole run (the pipeline's exit handler) stops every recorded server.
Where the server runs is ``execution.target``:

* ``local``: a detached process on 127.0.0.1 (:mod:`selflengthen.serving.local`), serving a local
  folder (an ``s3://`` model is fetched first). A record left by a killed run is stopped before a
  new server starts, so a rerun never leaks a server.
* ``kubeflow``: a vLLM Deployment and Service (:mod:`selflengthen.serving.cluster`).

A role's model is either a plain model folder (the base model) or a training output
(:mod:`selflengthen.training.output`), whose merged model, or base model plus LoRA adapter, is used
(a shared server always uses the adapter). The record names each role's model (``sources``: its URI
and, for a training output, its fingerprint), and the endpoint the steps get carries that as
``model_source``, so every output made with the model records which model it was (a retrained
model changes the fingerprints of what it makes). On Kubeflow the endpoint's ``max_concurrency``
is scaled by ``serving.cluster.replicas``: the Service spreads the requests over the replicas.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

from pydantic import BaseModel, ConfigDict

from selflengthen.config import MAX_CONCURRENCY, EndpointConfig, Role, RunConfig
from selflengthen.errors import EndpointError, SelfLengthenError
from selflengthen.orchestration.layout import RunLayout, phase_index
from selflengthen.serving.plan import ModelRole, ServerName, ServerPlan
from selflengthen.storage import Storage, get_storage

log = logging.getLogger(__name__)

# The local run's folder (set by the local runner): model server logs go to <dir>/logs/.
LOCAL_DIR_ENV = "SELFLENGTHEN_LOCAL_DIR"


class ServerRecord(BaseModel):
    """A running model server as the steps of a run see it."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["local", "kubeflow"]
    phase: str
    server: ServerName
    base_url: str
    model: str
    models: dict[str, str]  # role -> the model name its requests carry
    sources: dict[str, str | None] = {}  # role -> the model it is (model_identity)
    pid: int | None = None
    port: int | None = None


class ServedModel(BaseModel):
    """What a server loads: a model folder, and a LoRA adapter on top of it when there is one."""

    model: str
    adapter: str | None = None


def served_model(storage: Storage, uri: str) -> ServedModel:
    """The model at ``uri``: a training output (merged model, or base plus adapter) or a plain folder."""
    from selflengthen.training.output import read_trained_model

    trained = read_trained_model(storage, uri)
    if trained is None:
        return ServedModel(model=uri)
    if trained.model is not None:
        return ServedModel(model=trained.model)
    return ServedModel(model=trained.base_model, adapter=trained.adapter)


def plan_server(config: RunConfig, storage: Storage, server: ServerName, models: Mapping[ModelRole, str]) -> ServerPlan:
    """What the server ``server`` loads for the roles' ``models`` (URIs; ``base``: the run's base model)."""
    from selflengthen.training.output import read_trained_model

    base = models.get("base")
    if server != "shared":
        served = served_model(storage, models[server])
        return ServerPlan.for_role(config, server, served.model, served.adapter, is_base=models[server] == base)
    on_base: list[ModelRole] = []
    adapters: dict[ModelRole, str] = {}
    bases = {base} if base else set()
    for role, uri in models.items():
        if role == "base":
            continue
        trained = read_trained_model(storage, uri)
        if trained is None:
            on_base.append(role)
            bases.add(uri)
        elif trained.adapter is None:
            raise EndpointError(
                f"serving.layout shared: the {role} ({uri}) is a full model, not a LoRA adapter of the base model; "
                "use serving.layout sequential or per_role"
            )
        else:
            adapters[role] = trained.adapter
            bases.add(base or trained.base_model)
    if len(bases) != 1:
        raise EndpointError(f"serving.layout shared: the roles {dict(models)} are not one base model and its adapters")
    return ServerPlan.shared(config, bases.pop(), on_base=on_base, adapters=adapters)


def serve(config: RunConfig, *, phase: str, server: ServerName, models: Mapping[ModelRole, str]) -> str:
    """Start the model server ``server`` of ``phase`` for the roles' ``models``; returns the URI of its record."""
    from selflengthen.training.output import model_identity

    storage = get_storage(config.storage)
    record_uri = RunLayout(config).server_record(phase, server)
    plan = plan_server(config, storage, server, models)
    sources = {role: model_identity(storage, models.get(role, models.get("base"))) for role in plan.roles}
    if config.execution.target == "local":
        if storage.exists(record_uri):  # left by a run that was killed
            _stop_local(_read(storage, record_uri))
        record = _start_local(config, phase, server, plan).model_copy(update={"sources": sources})
    else:
        from selflengthen.serving.cluster import serve_role_in_cluster

        base_url = serve_role_in_cluster(config, server, phase_index(config, phase), plan)
        record = ServerRecord(
            target="kubeflow", phase=phase, server=server, base_url=base_url, model=plan.names[0], models=plan.roles, sources=sources
        )
    storage.write_text(record_uri, record.model_dump_json(indent=2))
    return record_uri


def teardown(config: RunConfig, *, phase: str, server: ServerName) -> list[str]:
    """Stop the model server ``server`` of ``phase``; what was stopped (empty when nothing ran)."""
    storage = get_storage(config.storage)
    record_uri = RunLayout(config).server_record(phase, server)
    if config.execution.target == "kubeflow":
        from selflengthen.serving.cluster import teardown_role_in_cluster

        stopped = teardown_role_in_cluster(config, server, phase_index(config, phase))
    else:
        stopped = [_stop_local(_read(storage, record_uri))] if storage.exists(record_uri) else []
    storage.delete(record_uri)
    return stopped


def teardown_run(config: RunConfig, *, api_client: Any = None) -> list[str]:
    """Stop every server of the run (the exit handler: also after a failure); what was stopped.

    On Kubeflow the cluster comes first and needs no storage: the run's model servers and
    TrainJobs are deleted by label, each kind on its own (a failure is logged and the rest still
    deleted), then the server records are removed (a storage failure is logged only: the objects
    are gone). The step fails at the end when a cluster delete failed, so the run shows it.
    ``api_client``: the Kubernetes client (default: the pod's service account, else kubeconfig).
    """
    if config.execution.target == "local":
        storage = get_storage(config.storage)
        records = _records(storage, config)
        stopped = [_stop_local(_read(storage, uri)) for uri in records]
        for uri in records:
            storage.delete(uri)
        return stopped
    from selflengthen.cluster.trainjob import delete_run_trainjobs
    from selflengthen.serving.cluster import teardown_role_in_cluster

    stopped: list[str] = []
    failures: list[str] = []
    for delete in (teardown_role_in_cluster, delete_run_trainjobs):
        try:
            stopped += delete(config, api_client=api_client)
        except SelfLengthenError as error:
            log.error("teardown of run %s: %s", config.run_id, error)
            failures.append(str(error))
    try:
        storage = get_storage(config.storage)
        for uri in _records(storage, config):
            storage.delete(uri)
    except SelfLengthenError as error:
        log.warning("teardown of run %s: the server records stay (%s); the cluster objects are deleted", config.run_id, error)
    if failures:
        raise EndpointError(f"teardown of run {config.run_id} left cluster objects behind: {'; '.join(failures)}")
    return stopped


def _records(storage: Storage, config: RunConfig) -> list[str]:
    return [uri for uri in storage.list(RunLayout(config).serving()) if uri.endswith(".json")]


@contextmanager
def server_kept(config: RunConfig, record_uri: str) -> Iterator[None]:
    """While the block runs, keep renewing the lease of the server recorded at ``record_uri`` (on
    Kubeflow; a local server has no lease): the generation steps hold their server this way."""
    if config.execution.target != "kubeflow":
        yield
        return
    from selflengthen.cluster.ownership import lease_kept
    from selflengthen.serving.cluster import renew_server_lease

    record = _read(get_storage(config.storage), record_uri)
    iteration = phase_index(config, record.phase)
    renew = functools.partial(renew_server_lease, config, record.server, iteration)
    with lease_kept(renew, config.execution.lease_s / 4, f"the {record.phase} {record.server} server"):
        yield


def endpoint_for(config: RunConfig, record_uri: str, role: Role, *, model: ModelRole | None = None) -> EndpointConfig:
    """The ``role`` endpoint of ``config`` pointed at the server recorded at ``record_uri``, asking
    for the model of ``model`` (default: ``role``'s own; ``base``: the base model)."""
    record = _read(get_storage(config.storage), record_uri)
    wanted = model or role
    if wanted not in record.models:
        raise EndpointError(
            f"the {record.phase} {record.server} server ({record_uri}) serves {sorted(record.models)}, not the {wanted} model"
        )
    endpoint = getattr(config.serving, role)
    concurrency = endpoint.max_concurrency
    if record.target == "kubeflow":  # the Service spreads the requests over the replicas
        concurrency = min(MAX_CONCURRENCY, concurrency * config.serving.cluster.replicas)
    update = {"base_url": record.base_url, "model": record.models[wanted], "model_source": record.sources.get(wanted), "max_concurrency": concurrency}
    return endpoint.model_copy(update=update)


def with_endpoint(config: RunConfig, record_uri: str, role: Role, *, model: ModelRole | None = None) -> RunConfig:
    """``config`` whose ``role`` endpoint is the recorded server (asking for ``model``'s model)."""
    serving = config.serving.model_copy(update={role: endpoint_for(config, record_uri, role, model=model)})
    return config.model_copy(update={"serving": serving})


def _read(storage: Storage, record_uri: str) -> ServerRecord:
    if not storage.exists(record_uri):
        raise EndpointError(f"no model server record at {record_uri}: the serve step of this phase has not run")
    return ServerRecord.model_validate_json(storage.read_text(record_uri))


def _start_local(config: RunConfig, phase: str, server: ServerName, plan: ServerPlan) -> ServerRecord:
    from selflengthen.modelio import localize
    from selflengthen.serving.local import start_local_server

    vllm = config.serving.local.backend == "vllm"
    if plan.adapters and not vllm:
        raise EndpointError(
            f"the {server} server of {phase} serves LoRA adapters ({', '.join(uri for _, uri in plan.adapters)}), which "
            "transformers serve cannot load: set training.save_merged (the local runner does so) or serving.local.backend vllm"
        )
    log_dir = Path(os.environ.get(LOCAL_DIR_ENV) or tempfile.gettempdir()) / "logs"

    def local_path(uri: str) -> str:
        return str(localize(uri, config.storage))

    handle = start_local_server(
        local_path(plan.model),
        plan.names[0],
        config.serving.local,
        names_args=plan.vllm_args(config, local_path) if vllm else None,
        log_file=str(log_dir / f"server-{phase}-{server}.log"),
    )
    # transformers serve answers to the model folder's path only, for every role
    models = plan.roles if vllm else {role: handle.model for role in plan.roles}
    return ServerRecord(
        target="local", phase=phase, server=server, base_url=handle.base_url, model=handle.model, models=models,
        pid=handle.pid, port=handle.port,
    )  # fmt: skip


def _stop_local(record: ServerRecord) -> str:
    """Stop a local server (a no-op when it is gone already); names it."""
    from selflengthen.serving.local import ServerHandle, stop_local_server

    stop_local_server(ServerHandle(pid=record.pid, port=record.port, base_url=record.base_url, model=record.model))
    return f"{record.phase} {record.server} (pid {record.pid})"
