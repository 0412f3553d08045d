"""Talking to the Kubeflow Pipelines API: connect, upload the pipeline as a new version, start a
run, follow it (``selflengthen submit``), and read the backend's version (``selflengthen doctor``).

Everything goes through the kfp client (kfp 2.17) and the API classes it holds (kfp_server_api,
the generated client of the v2beta1 REST API): paths, bodies and answers are theirs.

Authentication is the kfp client's own, and nothing is written to a file:

* a token from an environment variable (``--token-env``), sent as ``Authorization: Bearer``
  (kfp ``Client(existing_token=...)``);
* in a pod, the projected KFP service-account token (kfp ``ServiceAccountTokenVolumeCredentials``,
  path ``/var/run/secrets/kubeflow/pipelines/token`` or env ``KF_PIPELINES_SA_TOKEN_PATH``), re-read
  before each call;
* without a host, the kubeconfig (``--kube-context``): the client reaches ml-pipeline through the
  API server's service proxy (kfp/client/client.py ``_load_config``).

The client's ``namespace`` is KFP's own (default ``kubeflow``): it names the in-cluster service
``ml-pipeline.<namespace>`` and the API server proxy path; the profile namespace of a multi-user
run is passed to each call instead. (In a pod on multi-user Kubeflow the kfp client itself saves
the pod's namespace, no credential, to ``~/.config/kfp/context.json``.)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import kfp_server_api
import urllib3
import yaml

from selflengthen.errors import SelfLengthenError

# The states a run ends in (kfp_server_api V2beta1RuntimeState; kfp's wait_for_run_completion
# stops at succeeded, failed, skipped, error).
FINAL_STATES = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}
# The oldest backend that fills {{$.pipeline_job_uuid}} in a task input (the run id, docs/kubeflow.md).
MIN_KFP_VERSION = (2, 5, 0)
# From this backend on the step pods' securityContext (non-root, no privilege escalation) applies;
# older backends ignore it.
SECURITY_CONTEXT_KFP_VERSION = (2, 16, 0)


class KfpError(SelfLengthenError):
    """The KFP API refused a request or could not be reached."""


@dataclass(frozen=True)
class Backend:
    """What the backend says of itself (``GET /apis/v2beta1/healthz``)."""

    multi_user: bool
    tag_name: str

    @property
    def version(self) -> tuple[int, ...] | None:
        """The release from ``tag_name`` (``2.17.0``, ``v2.5.0-rc.1``), None when unknown."""
        digits = self.tag_name.lstrip("v").split("-")[0].split(".")
        try:
            return tuple(int(part) for part in digits[:3])
        except ValueError:
            return None


@dataclass(frozen=True)
class Submission:
    """What ``submit`` created."""

    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str
    url: str


@contextmanager
def kfp_errors(action: str) -> Iterator[None]:
    """Turn the KFP client's exceptions into KfpError naming ``action`` and the server's message."""
    try:
        yield
    except kfp_server_api.ApiException as error:
        detail = error.body or error.reason
        try:
            detail = json.loads(error.body).get("message") or detail
        except (TypeError, ValueError, AttributeError):
            pass
        hint = {401: " (check the token: --token-env)", 403: " (the identity may not do this in that namespace)"}.get(error.status or 0, "")
        raise KfpError(f"{action}: HTTP {error.status}{hint}: {detail}") from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise KfpError(f"{action}: the KFP API could not be reached ({error})") from None


def connect(
    host: str | None,
    *,
    kfp_namespace: str = "kubeflow",
    token_env: str | None = None,
    kube_context: str | None = None,
    ui_host: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Any:
    """A ``kfp.Client`` for ``host`` (or KFP in ``kfp_namespace`` through the kubeconfig's
    cluster), authenticated as described above."""
    import kfp
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    options: dict[str, Any] = {"host": host, "namespace": kfp_namespace, "kube_context": kube_context, "ui_host": ui_host}
    token = environ.get(token_env) if token_env else None
    if token_env and not token:
        raise KfpError(f"--token-env {token_env}: the environment variable is not set")
    sa_token = environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
    if token:
        options["existing_token"] = token
    elif host and Path(sa_token).is_file():
        options["credentials"] = ServiceAccountTokenVolumeCredentials(sa_token)
    with warnings.catch_warnings(), kfp_errors(f"connecting to the KFP API at {host or 'the kubeconfig cluster'}"):
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(**options)


def backend_info(client: Any) -> Backend:
    """Mode and release of the backend. The generated model drops ``tag_name``, which the API
    server writes into its healthz answer (kubeflow/pipelines backend/src/apiserver/main.go, the
    ``/apis/v2beta1/healthz`` handler: commit_sha, tag_name, multi_user, pipeline_store), so the
    raw JSON is read."""
    with kfp_errors("asking the KFP API for its health and version (GET /apis/v2beta1/healthz)"):
        response = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
        body = json.loads(response.data or b"{}")
    return Backend(multi_user=bool(body.get("multi_user")), tag_name=str(body.get("tag_name") or "unknown"))


def _equals(key: str, value: str) -> str:
    """A filter: ``key`` equals ``value``, as kfp's get_pipeline_id and get_experiment send it
    (kfp/client/client.py, ``_FILTER_OPERATIONS['EQUALS']`` is 1)."""
    return json.dumps({"predicates": [{"operation": 1, "key": key, "stringValue": value}]})


def content_version_name(package: Path) -> str:
    """``sha256-<first 12 hex digits of the file's hash>``: the same file, the same version."""
    return f"sha256-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"


def default_version_name(package: Path, now: float | None = None) -> str:
    """``<UTC time>-sha256-<hash>``: unique per upload, traceable to the file."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{moment}-{content_version_name(package)}"


def register(client: Any, package: Path, *, namespace: str, version_name: str | None = None) -> tuple[str, str, str]:
    """Upload ``package`` as a version of its pipeline, named after its content unless
    ``version_name`` is given, once (GitOps registration): (pipeline id, version id, version name)."""
    backend = backend_info(client)
    version_name = version_name or content_version_name(package)
    pipeline_id, version_id = upload_version(
        client, package, name=pipeline_name_of(package), version_name=version_name, namespace=namespace if backend.multi_user else None
    )
    return pipeline_id, version_id, version_name


def pipeline_name_of(package: Path) -> str:
    """The pipeline's name in the compiled file (``pipelineInfo.name``)."""
    spec = next(yaml.safe_load_all(package.read_text(encoding="utf-8")))  # the pipeline spec, then the platform spec
    return spec["pipelineInfo"]["name"]


def upload_version(client: Any, package: Path, *, name: str, version_name: str, namespace: str | None) -> tuple[str, str]:
    """Upload ``package`` as version ``version_name`` of pipeline ``name`` (created when missing,
    in ``namespace`` on a multi-user backend; a version of that name is reused); (pipeline id,
    version id)."""
    with kfp_errors(f"looking up pipeline {name!r}"):
        found = client._pipelines_api.pipeline_service_list_pipelines(filter=_equals("display_name", name), namespace=namespace)
    pipelines = [pipeline for pipeline in found.pipelines or [] if pipeline.display_name == name]
    if pipelines:
        pipeline_id = pipelines[0].pipeline_id
    else:
        # Created empty, then given its first version below. Not by POST /apis/v2beta1/pipelines/upload:
        # that one names its first version after the pipeline (PipelineUploadServer.UploadPipeline,
        # kubeflow/pipelines backend/src/apiserver/server/pipeline_upload_server.go: the version takes
        # pipeline.Name; no query parameter names it), so the version named here would not exist.
        # POST /apis/v2beta1/pipelines creates a pipeline without a version; its display_name is also
        # its name on servers that have both (toModelPipeline, backend/src/apiserver/server/api_converter.go).
        body = kfp_server_api.V2beta1Pipeline(display_name=name, namespace=namespace)
        with kfp_errors(f"creating pipeline {name!r} (POST /apis/v2beta1/pipelines)"):
            pipeline_id = client._pipelines_api.pipeline_service_create_pipeline(body).pipeline_id
    with kfp_errors(f"looking up version {version_name!r} of pipeline {name!r}"):
        found_versions = client._pipelines_api.pipeline_service_list_pipeline_versions(
            pipeline_id, filter=_equals("display_name", version_name)
        )
    for existing in found_versions.pipeline_versions or []:
        if existing.display_name == version_name:  # the same file again (the name holds its hash): no duplicate
            return pipeline_id, existing.pipeline_version_id
    with kfp_errors(f"uploading version {version_name!r} of pipeline {name!r} (POST /apis/v2beta1/pipelines/upload_version)"):
        version = client._upload_api.upload_pipeline_version(str(package), name=version_name, pipelineid=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def experiment_id(client: Any, name: str, namespace: str | None) -> str:
    """The id of experiment ``name`` (in ``namespace``), created when missing."""
    with kfp_errors(f"looking up experiment {name!r}"):
        found = client._experiment_api.experiment_service_list_experiments(filter=_equals("display_name", name), namespace=namespace)
    for experiment in found.experiments or []:
        if experiment.display_name == name:
            return experiment.experiment_id
    body = kfp_server_api.V2beta1Experiment(display_name=name, namespace=namespace)
    with kfp_errors(f"creating experiment {name!r}"):
        return client._experiment_api.experiment_service_create_experiment(body).experiment_id


def run_url(ui_prefix: str, run_id: str) -> str:
    """The run's page in the KFP UI: the link kfp's run_pipeline prints, below the UI host
    (``--ui-host``, env KF_PIPELINES_UI_ENDPOINT, else the API host; ``/pipeline`` in a pod)."""
    return f"{ui_prefix.rstrip('/')}/#/runs/details/{run_id}"


def submit(
    client: Any,
    package: Path,
    *,
    parameters: dict[str, Any],
    namespace: str,
    service_account: str,
    experiment: str,
    run_name: str,
    version_name: str | None = None,
) -> Submission:
    """Upload ``package`` as a new pipeline version and start a run of it with ``parameters``
    under ``service_account``; on a multi-user backend the pipeline and the experiment (hence the
    run) live in ``namespace``, on a standalone one in KFP's own."""
    backend = backend_info(client)
    scope = namespace if backend.multi_user else None
    name = pipeline_name_of(package)
    version_name = version_name or default_version_name(package)
    pipeline_id, version_id = upload_version(client, package, name=name, version_name=version_name, namespace=scope)
    experiment_key = experiment_id(client, experiment, scope)
    body = kfp_server_api.V2beta1Run(
        experiment_id=experiment_key,
        display_name=run_name,
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=pipeline_id, pipeline_version_id=version_id
        ),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=parameters),
        service_account=service_account,
    )
    with kfp_errors(f"creating run {run_name!r} (POST /apis/v2beta1/runs)"):
        run = client._run_api.run_service_create_run(body)
    return Submission(pipeline_id, version_id, version_name, experiment_key, run.run_id, run_url(client._get_url_prefix(), run.run_id))


def follow(
    client: Any,
    run_id: str,
    *,
    timeout_s: float,
    poll_s: float,
    on_state: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Poll the run until it ends (``FINAL_STATES``); call ``on_state`` at each new state; the
    final ``V2beta1Run``. KfpError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        with kfp_errors(f"reading run {run_id}"):
            run = client._run_api.run_service_get_run(run_id)
        state = (run.state or "RUNTIME_STATE_UNSPECIFIED").upper()
        if state != last:
            on_state(state)
            last = state
        if state in FINAL_STATES:
            return run
        if time.monotonic() >= deadline:
            raise KfpError(f"run {run_id} still {state} after {timeout_s:g} s (--timeout); it goes on in the cluster")
        sleep(poll_s)


def run_error(run: Any) -> str:
    """The backend's error of an ended run, or ''."""
    error = run.error
    return (error.message or "") if error is not None else ""
