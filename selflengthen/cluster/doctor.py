"""``selflengthen doctor``: what a kubeflow run needs, checked before it starts, not an hour in.

Each check gives one or more :class:`Finding`: ok, or what is wrong and how to fix it. The checks
read object storage (with this machine's credentials, which should be the keys the storage Secret
holds), the KFP API, and the Kubernetes API as the caller (kubeconfig or in-cluster account).
Whether the run's own service account may do what the steps and the KFP launcher do is asked
with one SubjectAccessReview (``authorization.k8s.io/v1``) per permission of
:func:`selflengthen.cluster.permissions.run_permissions`; creating them is cluster-scoped
(``create subjectaccessreviews``, held by cluster admins; ``kubectl auth can-i --as`` is the
fallback the message names). Nothing is created or changed, but for one probe object written
and deleted below the workdir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from selflengthen.cluster import kfp_api
from selflengthen.cluster.objects import API_KEY_SECRET_KEY, HF_TOKEN_SECRET_KEY, STORAGE_SECRET_KEYS, describe_api_error
from selflengthen.cluster.permissions import Permission, launcher_permissions, run_permissions
from selflengthen.cluster.trainjob import GROUP as TRAINER_GROUP
from selflengthen.cluster.trainjob import MIN_TRAINER_VERSION, SPEC_FIELDS
from selflengthen.config import RunConfig
from selflengthen.errors import SelfLengthenError
from selflengthen.evaluation.benchmarks import load_benchmark
from selflengthen.modelio import HUB_SCHEME
from selflengthen.storage import Storage, get_storage, is_s3_uri, join_uri

GPU_RESOURCE = "nvidia.com/gpu"
TRAINER_CRDS = ("trainjobs", "trainingruntimes", "clustertrainingruntimes")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    message: str
    fix: str = ""
    warning: bool = False  # passes, but what it checks was only partly checked: says why and how to check it all

    def line(self) -> str:
        if self.warning:
            return f"WARN  {self.check}: {self.message}" + (f"\n      fix: {self.fix}" if self.fix else "")
        if self.ok:
            return f"ok    {self.check}: {self.message}"
        return f"FAIL  {self.check}: {self.message}" + (f"\n      fix: {self.fix}" if self.fix else "")


def ok(check: str, message: str) -> list[Finding]:
    return [Finding(check, True, message)]


def failed(check: str, message: str, fix: str) -> list[Finding]:
    return [Finding(check, False, message, fix)]


# --------------------------------------------------------------------------- object storage


def check_storage(config: RunConfig, storage: Storage) -> list[Finding]:
    """The S3 endpoint answers, takes the credentials, has the workdir's bucket, and lets write."""
    name = "storage"
    if not config.storage.s3_endpoint:
        return failed(name, "storage.s3_endpoint is not set", "set storage.s3_endpoint to the host:port of your S3/MinIO")
    try:
        storage.check_writable(config.workdir)
    except SelfLengthenError as error:
        return failed(
            name, str(error),
            f"check storage.s3_endpoint / s3_secure, that the bucket of {config.workdir} exists (mc mb, aws s3 mb) and that "
            f"{config.storage.access_key_env} / {config.storage.secret_key_env} here hold the keys of Secret "
            f"{config.pipeline.storage_secret}",
        )  # fmt: skip
    return ok(name, f"{config.storage.s3_endpoint}: {config.workdir} is writable with these credentials")


def check_base_model(config: RunConfig, storage: Storage) -> list[Finding]:
    """The base model folder holds a loadable config.json and weights."""
    name, uri = "base model", config.model.base
    if uri.startswith("hf://"):
        return ok(name, f"{uri} is fetched from the Hugging Face Hub by the prepare step")
    upload = "selflengthen upload-inputs --config CONFIG --model-dir MODEL_DIR (docs/kubeflow.md)"
    try:
        files = [entry.removeprefix(uri.rstrip("/") + "/") for entry in storage.list(uri)]
        if "config.json" not in files:
            return failed(name, f"no config.json below {uri} ({len(files)} objects there)", f"upload the model folder: {upload}")
        model_config = json.loads(storage.read_text(join_uri(uri, "config.json")))
    except SelfLengthenError as error:
        return failed(name, str(error), f"upload the model folder: {upload}")
    except ValueError as error:
        return failed(name, f"{uri}/config.json is not JSON: {error}", "upload the model's own config.json again")
    if not isinstance(model_config, dict) or "model_type" not in model_config:
        return failed(name, f"{uri}/config.json has no model_type: not a transformers model config", "upload the model's own config.json")
    weights = [file for file in files if file.endswith(WEIGHT_SUFFIXES)]
    if not weights:
        return failed(name, f"no weights (*.safetensors, *.bin) below {uri}", f"upload the whole model folder: {upload}")
    if config.serving.cluster.stream_from_s3 and not any(file.endswith(".safetensors") for file in weights):
        return failed(
            name, f"serving.cluster.stream_from_s3: vLLM's streamer reads *.safetensors only, and {uri} has none",
            "save the model as safetensors (save_pretrained(safe_serialization=True)) or set serving.cluster.stream_from_s3 false",
        )  # fmt: skip
    return ok(name, f"{uri}: {model_config['model_type']} config, {len(weights)} weight file(s)")


def check_benchmarks(config: RunConfig, storage: Storage) -> list[Finding]:
    """Each benchmark file the evaluation reads is there and parses."""
    if not config.eval.enabled:
        return ok("benchmarks", "eval.enabled is false: none read")
    findings = []
    for benchmark in config.eval.benchmarks:
        name, source = f"benchmark {benchmark}", config.eval.benchmark_files.get(benchmark)
        if source is None:
            findings += ok(name, "the copy packaged in the image")
            continue
        if not is_s3_uri(source):
            findings += ok(name, f"{source} is read at run time")
            continue
        try:
            rows = load_benchmark(storage, benchmark, source)
        except SelfLengthenError as error:
            findings += failed(name, str(error), "upload it: selflengthen upload-inputs --config CONFIG (docs/kubeflow.md)")
            continue
        findings += ok(name, f"{source}: {len(rows)} prompts")
    return findings


# --------------------------------------------------------------------------- Kubeflow Pipelines


def check_kfp(client_factory: Callable[[], Any]) -> list[Finding]:
    """The KFP API answers and its backend is recent enough."""
    name = "KFP API"
    try:
        backend = kfp_api.backend_info(client_factory())
    except SelfLengthenError as error:
        return failed(name, str(error), "pass --host (or KF_PIPELINES_ENDPOINT) and a token (--token-env), or a kubeconfig context")
    mode = "multi-user" if backend.multi_user else "standalone"
    version = backend.version
    minimum = ".".join(map(str, kfp_api.MIN_KFP_VERSION))
    if version is None:
        return failed(name, f"{mode}, version {backend.tag_name!r} unknown", f"use a released KFP backend, {minimum} or later")
    if version < kfp_api.MIN_KFP_VERSION:
        return failed(
            name, f"{mode}, backend {backend.tag_name}: older than {minimum}, which fills the run id placeholder",
            f"upgrade Kubeflow Pipelines to {minimum} or later (docs/kubeflow.md, Prerequisites)",
        )  # fmt: skip
    note = ""
    if version < kfp_api.SECURITY_CONTEXT_KFP_VERSION:
        note = f"; below {'.'.join(map(str, kfp_api.SECURITY_CONTEXT_KFP_VERSION))} the step pods' non-root security context is ignored"
    return ok(name, f"{mode}, backend {backend.tag_name}{note}")


# --------------------------------------------------------------------------- Kubernetes


def _api_failure(name: str, error: Exception, action: str, fix: str) -> list[Finding]:
    return failed(name, describe_api_error(error, action), fix)


def check_trainer(config: RunConfig, api: k8s.ApiClient) -> list[Finding]:
    """Kubeflow Trainer's CRDs are installed, the TrainJob's has every spec field the TrainJobs set
    (an older Trainer's API server refuses them: they are created with fieldValidation Strict), and
    the training runtime exists."""
    name = "Kubeflow Trainer"
    if config.execution.training != "trainjob":
        return ok(name, "execution.training is inline: no TrainJobs")
    extensions = k8s.ApiextensionsV1Api(api)
    findings: list[Finding] = []
    for plural in TRAINER_CRDS:
        crd = f"{plural}.{TRAINER_GROUP}"
        try:
            found = extensions.read_custom_resource_definition(crd)
        except (ApiException, HTTPError) as error:
            fix = f"install Kubeflow Trainer {MIN_TRAINER_VERSION} or later (docs/kubeflow.md, Prerequisites)"
            if isinstance(error, ApiException) and error.status == 404:
                findings += failed(f"CRD {crd}", "not installed", fix)
            else:
                findings += _api_failure(f"CRD {crd}", error, f"reading CRD {crd}", fix)
            continue
        served = {version.name: version for version in found.spec.versions if version.served}
        upgrade = f"install Kubeflow Trainer {MIN_TRAINER_VERSION} or later"
        missing = _missing_spec_fields(served["v1alpha1"]) if plural == "trainjobs" and "v1alpha1" in served else []
        if "v1alpha1" not in served:
            findings += failed(f"CRD {crd}", f"serves {list(served)}, not v1alpha1", upgrade)
        elif missing:
            findings += failed(f"CRD {crd}", f"its TrainJob has no {', '.join(f'spec.{field}' for field in missing)} (Trainer older than {MIN_TRAINER_VERSION})", upgrade)
        else:
            findings += ok(f"CRD {crd}", "installed, serves v1alpha1")
    runtime, kind = config.trainjob.runtime, config.trainjob.runtime_kind
    custom = k8s.CustomObjectsApi(api)
    try:
        if kind == "TrainingRuntime":
            custom.get_namespaced_custom_object(TRAINER_GROUP, "v1alpha1", config.pipeline.namespace, "trainingruntimes", runtime)
        else:
            custom.get_cluster_custom_object(TRAINER_GROUP, "v1alpha1", "clustertrainingruntimes", runtime)
    except (ApiException, HTTPError) as error:
        where = f"{kind} {runtime}" + (f" in namespace {config.pipeline.namespace}" if kind == "TrainingRuntime" else "")
        fix = "install the chart or overlay (it installs selflengthen-deepspeed), or set trainjob.runtime / runtime_kind"
        if isinstance(error, ApiException) and error.status == 404:
            return findings + failed("training runtime", f"{where} does not exist", fix)
        return findings + _api_failure("training runtime", error, f"reading {where}", fix)
    return findings + ok("training runtime", f"{kind} {runtime} exists")


def _missing_spec_fields(version: k8s.V1CustomResourceDefinitionVersion) -> list[str]:
    """The TrainJob spec fields the project sets that this CRD version's schema does not define."""
    schema = version.schema.open_apiv3_schema if version.schema else None
    spec = (schema.properties or {}).get("spec") if schema else None
    defined = set((spec.properties or {}) if spec else ())
    return [field for field in SPEC_FIELDS if field not in defined]


def _tolerated(taint: k8s.V1Taint, tolerations: list[dict[str, Any]]) -> bool:
    """Whether one of ``tolerations`` tolerates ``taint`` (Kubernetes' matching rules)."""
    if taint.effect == "PreferNoSchedule":
        return True
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.effect:
            continue
        if toleration.get("operator") == "Exists":
            if not toleration.get("key") or toleration["key"] == taint.key:
                return True
        elif toleration.get("key") == taint.key and (toleration.get("value") or "") == (taint.value or ""):
            return True
    return False


def _quantity(resources: dict[str, str] | None) -> int:
    return int((resources or {}).get(GPU_RESOURCE, "0"))


def _container_gpus(container: k8s.V1Container) -> int:
    """A container's GPU request; for extended resources the API server defaults a request left
    out to the limit, and a request must equal the limit."""
    resources = container.resources
    if resources is None:
        return 0
    return _quantity(resources.requests) if resources.requests and GPU_RESOURCE in resources.requests else _quantity(resources.limits)


def pod_gpu_request(pod: k8s.V1Pod) -> int:
    """The GPUs the scheduler reserves for ``pod``: its effective request
    (https://kubernetes.io/docs/concepts/resource-management/effective-pod-requests-limits/):
    the higher of the sum over app and sidecar containers (init containers with restartPolicy
    Always) and the effective init request, the highest over init containers of one's request plus
    the sidecars listed before it; plus the pod overhead."""
    sidecars = init_peak = 0
    for container in pod.spec.init_containers or []:
        gpus = _container_gpus(container)
        if container.restart_policy == "Always":
            sidecars += gpus
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, gpus + sidecars)
    running = sum(_container_gpus(container) for container in pod.spec.containers or []) + sidecars
    return max(running, init_peak) + _quantity(pod.spec.overhead)


# Pods bound to a node that still hold their requests (the scheduler frees a pod's requests when it
# reaches Succeeded or Failed); the API server filters pods by these fields (spec.nodeName,
# status.phase are pod field selectors).
HOLDING_PODS = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"


def gpus_in_use(api: k8s.ApiClient) -> dict[str, int]:
    """GPUs requested per node by its pods that are not terminated (one cluster-wide list)."""
    used: dict[str, int] = {}
    for pod in k8s.CoreV1Api(api).list_pod_for_all_namespaces(field_selector=HOLDING_PODS).items:
        gpus = pod_gpu_request(pod)
        if gpus:
            used[pod.spec.node_name] = used.get(pod.spec.node_name, 0) + gpus
    return used


@dataclass(frozen=True)
class GpuNode:
    name: str
    allocatable: int
    free: int


def _matching_nodes(nodes: list[k8s.V1Node], selector: dict[str, str], tolerations: list[dict[str, Any]], used: dict[str, int] | None) -> list[GpuNode]:
    """Schedulable nodes with the labels of ``selector`` whose taints ``tolerations`` tolerate,
    with their allocatable GPUs and those free (allocatable when ``used`` is unknown)."""
    matching = []
    for node in nodes:
        labels = node.metadata.labels or {}
        if any(labels.get(key) != value for key, value in selector.items()):
            continue
        if (node.spec and node.spec.unschedulable) or not all(_tolerated(taint, tolerations) for taint in (node.spec.taints or [])):
            continue
        allocatable = _quantity(node.status and node.status.allocatable)
        free = allocatable if used is None else allocatable - used.get(node.metadata.name, 0)
        matching.append(GpuNode(node.metadata.name, allocatable, free))
    return matching


def check_gpu_nodes(config: RunConfig, api: k8s.ApiClient) -> list[Finding]:
    """Nodes whose labels, taints and free GPUs (allocatable minus what their running pods
    request) fit the vLLM servers and the trainers."""
    core = k8s.CoreV1Api(api)
    try:
        nodes = core.list_node().items
    except (ApiException, HTTPError) as error:
        return _api_failure("GPU nodes", error, "listing nodes", "run doctor with an identity that may list nodes")
    findings: list[Finding] = []
    try:
        used: dict[str, int] | None = gpus_in_use(api)
    except (ApiException, HTTPError) as error:
        used = None
        findings.append(Finding(
            "GPU nodes", True, describe_api_error(error, "listing the pods of all namespaces")
            + ": GPUs in use are unknown, so the checks below count allocatable GPUs, not free ones",
            "run doctor with an identity that may list pods in all namespaces to count free GPUs", warning=True,
        ))  # fmt: skip
    shapes = [("serving nodes", config.serving.cluster.node_selector, config.serving.cluster.tolerations, config.serving.cluster.gpus, 1, "serving.cluster")]
    if config.execution.training == "trainjob":
        shapes.append(("training nodes", config.trainjob.node_selector, config.trainjob.tolerations, config.trainjob.gpus_per_node, config.trainjob.num_nodes, "trainjob"))
    elif config.trainjob.gpus_per_node:
        shapes.append(("training nodes", config.trainjob.node_selector, config.trainjob.tolerations, config.trainjob.gpus_per_node, 1, "trainjob"))
    counted = "allocatable" if used is None else "free"
    for name, selector, tolerations, gpus, needed, section in shapes:
        matching = _matching_nodes(nodes, selector, tolerations, used)
        fitting = sorted(node.name for node in matching if node.free >= gpus)
        shape = f"{gpus} {counted} {GPU_RESOURCE}, labels {selector or '{}'}, tolerating their taints"
        figures = ", ".join(f"{node.name} {node.free} free of {node.allocatable}" for node in sorted(matching, key=lambda node: node.name)[:5])
        if len(fitting) >= needed:
            findings += ok(name, f"{len(fitting)} node(s) with {shape}: {', '.join(fitting[:5])} ({figures})")
        else:
            findings += failed(
                name, f"{len(fitting)} of {len(nodes)} node(s) have {shape}; {needed} needed" + (f" ({figures})" if figures else ""),
                f"free or add GPU nodes (NVIDIA GPU operator or device plugin) or adjust {section}.node_selector / tolerations / GPUs",
            )  # fmt: skip
    return findings


def _subject_access_review(user: str, namespace: str, permission: Permission) -> k8s.V1SubjectAccessReview:
    resource, _, subresource = permission.resource.partition("/")
    account_namespace = user.split(":")[2]
    return k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{account_namespace}", "system:authenticated"],
            resource_attributes=k8s.V1ResourceAttributes(
                namespace=namespace, group=permission.group, verb=permission.verb, name=permission.name,
                resource=resource, subresource=subresource or None,
            ),
        )
    )  # fmt: skip


def check_service_account(config: RunConfig, api: k8s.ApiClient, artifact_secret: str, run_namespace: str | None = None) -> list[Finding]:
    """The run's account exists in the namespace the run's pods use (``run_namespace``, else
    ``pipeline.run_namespace``: the KFP namespace of standalone Kubeflow Pipelines; else
    ``pipeline.namespace``) and holds every
    permission of :func:`run_permissions`: the steps' in ``pipeline.namespace``, the KFP
    launcher's in ``run_namespace``."""
    namespace, account = config.pipeline.namespace, config.pipeline.service_account
    run_namespace = run_namespace or config.pipeline.steps_namespace
    name = f"service account {run_namespace}/{account}"
    try:
        k8s.CoreV1Api(api).read_namespaced_service_account(account, run_namespace)
    except (ApiException, HTTPError) as error:
        fix = "install the chart or overlay for your Kubeflow mode (docs/kubeflow.md), or set pipeline.service_account"
        if isinstance(error, ApiException) and error.status == 404:
            return failed(name, "does not exist", fix)
        return _api_failure(name, error, f"reading ServiceAccount {run_namespace}/{account}", fix)
    user = f"system:serviceaccount:{run_namespace}:{account}"
    authorization = k8s.AuthorizationV1Api(api)
    launcher = set(launcher_permissions(artifact_secret))
    permissions = run_permissions(config, artifact_secret)
    missing: list[str] = []
    for permission in permissions:
        where = run_namespace if permission in launcher else namespace
        try:
            answer = authorization.create_subject_access_review(_subject_access_review(user, where, permission))
        except (ApiException, HTTPError) as error:
            return _api_failure(
                name, error, "asking SubjectAccessReview",
                f"run doctor as a cluster admin, or check by hand: kubectl auth can-i --as={user} -n {where} VERB RESOURCE",
            )  # fmt: skip
        if not (answer.status and answer.status.allowed):
            missing.append(f"{permission.describe()} in {where}")
    if missing:
        return failed(
            name, f"may not {', '.join(missing)}",
            "install the chart or overlay for the account the runs use (values kubeflow.mode, docs/kubeflow.md)",
        )  # fmt: skip
    return ok(name, f"exists and may do all {len(permissions)} things its steps and the KFP launcher do")


def check_model_cache(config: RunConfig, api: k8s.ApiClient) -> list[Finding]:
    """The PVC of ``execution.model_cache_pvc`` exists, is ReadWriteMany and bound."""
    claim, namespace = config.execution.model_cache_pvc, config.pipeline.namespace
    if not claim:
        return ok("model cache", "none: each server copies the model into its own volume")
    name = f"model cache PVC {namespace}/{claim}"
    fix = "create it ReadWriteMany (the chart: --set modelCache.create=true), or unset execution.model_cache_pvc"
    try:
        found = k8s.CoreV1Api(api).read_namespaced_persistent_volume_claim(claim, namespace)
    except (ApiException, HTTPError) as error:
        if isinstance(error, ApiException) and error.status == 404:
            return failed(name, "does not exist", fix)
        return _api_failure(name, error, f"reading PersistentVolumeClaim {namespace}/{claim}", fix)
    modes, phase = found.spec.access_modes or [], (found.status.phase if found.status else None)
    if "ReadWriteMany" not in modes:
        return failed(name, f"access modes {modes}: servers and trainers on several nodes need ReadWriteMany", fix)
    if phase != "Bound":
        return failed(name, f"is {phase or 'not bound'}", "check its storage class provisions ReadWriteMany volumes (kubectl describe pvc)")
    note = ""
    if config.execution.training == "inline" and config.pipeline.steps_namespace != namespace:
        note = f"; the inline train step runs in {config.pipeline.steps_namespace}, where it cannot mount it: it copies the model"
    return ok(name, f"ReadWriteMany, bound{note}")


@dataclass(frozen=True)
class SecretUse:
    """A Secret the run reads: its keys, the config field (or option) naming it, and per namespace
    the pods there that read it."""

    secret: str
    keys: tuple[str, ...]
    field: str
    readers: dict[str, str]


def _use(secret: str, keys: tuple[str, ...], field: str, *readers: tuple[str, str]) -> SecretUse:
    where: dict[str, list[str]] = {}
    for namespace, pods in readers:
        where.setdefault(namespace, []).append(pods)
    return SecretUse(secret, keys, field, {namespace: " and ".join(pods) for namespace, pods in where.items()})


def required_secrets(config: RunConfig, artifact_secret: str, run_namespace: str) -> list[SecretUse]:
    """Every Secret of the run and where it is read (a pod whose env names a missing Secret or key
    does not start). The step pods run in ``run_namespace`` (pipelines/tasks.py: every step the
    storage keys, a step that calls a model the API key, the prepare step of an ``hf://`` base and
    the export step that pushes to the Hub the Hub token), where the KFP launcher also reads the
    artifact store's Secret; the model servers and TrainJobs run in ``pipeline.namespace``
    (serving/cluster.py: the storage keys for the fetch container and vLLM's S3 streamer, HF_TOKEN
    and VLLM_API_KEY for vLLM; cluster/trainjob.py: the storage keys; its HF_TOKEN is for a Hub id,
    and on Kubeflow the prepare step has made the base an s3:// copy)."""
    servers = config.pipeline.namespace
    trainjobs = config.execution.training == "trainjob"
    storage_readers = [(run_namespace, "the step pods"), (servers, "the model servers")]
    if trainjobs:
        storage_readers.append((servers, "the TrainJobs"))
    uses = [_use(config.pipeline.storage_secret, STORAGE_SECRET_KEYS, "pipeline.storage_secret", *storage_readers)]
    if config.pipeline.api_key_secret:
        uses.append(_use(
            config.pipeline.api_key_secret, (API_KEY_SECRET_KEY,), "pipeline.api_key_secret",
            (run_namespace, "the steps that call a model"), (servers, "the vLLM servers"),
        ))  # fmt: skip
    if config.serving.cluster.hf_token_secret:
        hf_readers = [(servers, "the vLLM servers")]
        if config.model.base.startswith(HUB_SCHEME):
            hf_readers.append((run_namespace, "the prepare step"))
        if config.export.enabled and config.export.hub_repo:
            hf_readers.append((run_namespace, "the export step"))
        uses.append(_use(config.serving.cluster.hf_token_secret, (HF_TOKEN_SECRET_KEY,), "serving.cluster.hf_token_secret", *hf_readers))
    uses.append(_use(artifact_secret, (), "the KFP artifact store's Secret (--artifact-secret)", (run_namespace, "the KFP launcher")))
    return uses


def check_secrets(config: RunConfig, api: k8s.ApiClient, artifact_secret: str, run_namespace: str | None = None) -> list[Finding]:
    """Each Secret the config names exists in every namespace whose pods read it, with its keys
    (values are never read out)."""
    core = k8s.CoreV1Api(api)
    findings: list[Finding] = []
    for use in required_secrets(config, artifact_secret, run_namespace or config.pipeline.steps_namespace):
        for namespace, readers in use.readers.items():
            name = f"Secret {namespace}/{use.secret}"
            why = f"{use.field}; read by {readers}"
            create = f"kubectl -n {namespace} create secret generic {use.secret} " + " ".join(f"--from-literal={key}=..." for key in use.keys)
            try:
                found = core.read_namespaced_secret(use.secret, namespace)
            except (ApiException, HTTPError) as error:
                if isinstance(error, ApiException) and error.status == 404:
                    findings += failed(name, f"does not exist ({why})", create.strip())
                else:
                    findings += _api_failure(name, error, f"reading Secret {namespace}/{use.secret}", create.strip())
                continue
            absent = [key for key in use.keys if key not in set(found.data or {}) | set(found.string_data or {})]
            if absent:
                findings += failed(name, f"has no key {', '.join(absent)} ({why})", create.strip())
            else:
                findings += ok(name, f"exists{' with ' + ', '.join(use.keys) if use.keys else ''}")
    return findings


# --------------------------------------------------------------------------- all together


def run_checks(
    config: RunConfig,
    *,
    kfp_client: Callable[[], Any],
    api_client: Callable[[], k8s.ApiClient],
    artifact_secret: str,
    run_namespace: str | None = None,
    storage: Storage | None = None,
) -> list[Finding]:
    """Every check, in the order a run meets what they check."""
    storage = storage or get_storage(config.storage)
    findings = check_storage(config, storage) + check_base_model(config, storage) + check_benchmarks(config, storage)
    findings += check_kfp(kfp_client)
    try:
        api = api_client()
    except SelfLengthenError as error:
        return findings + failed("Kubernetes API", str(error), "use a kubeconfig context of the cluster (--kube-context)")
    checks: Iterable[Callable[[], list[Finding]]] = (
        lambda: check_trainer(config, api),
        lambda: check_gpu_nodes(config, api),
        lambda: check_model_cache(config, api),
        lambda: check_service_account(config, api, artifact_secret, run_namespace),
        lambda: check_secrets(config, api, artifact_secret, run_namespace),
    )
    for check in checks:
        findings += check()
    return findings
