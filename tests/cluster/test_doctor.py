"""`selflengthen doctor`: each check passing and failing with its message. The Kubernetes checks run
the real client against a scripted API (fake_kube), the storage checks against SeaweedFS, the KFP
check against the stand-in KFP API."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.cluster import doctor, kfp_api
from selflengthen.cluster.permissions import Permission, run_permissions
from selflengthen.config import parse_config
from selflengthen.storage import get_storage
from tests.cluster.conftest import NAMESPACE, cluster_config
from tests.cluster.fake_kube import FakeKubeAPI, status
from tests.fixtures.k8s_validation import CRD_DIR
from tests.fixtures.kfp_api import KfpServer
from tests.fixtures.s3 import S3Server

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
RUNTIME = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainingruntimes/selflengthen-deepspeed"
SAR = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
ARTIFACTS = "mlpipeline-minio-artifact"
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@functools.cache
def _crd_file(plural: str) -> dict[str, Any]:
    return yaml.safe_load((CRD_DIR / f"trainer.kubeflow.org_{plural}.yaml").read_text())


def crd(plural: str, served: bool = True, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Trainer CRD as the API server returns it (tests/fixtures/crds); ``without``: TrainJob
    spec fields an older Trainer lacks."""
    found = copy.deepcopy(_crd_file(plural))
    for version in found["spec"]["versions"]:
        version["served"] = served
        for field in without:
            del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][field]
    return found


def node(name: str, gpus: int, *, labels: dict[str, str] | None = None, tainted: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}] if tainted else []},
        "status": {"allocatable": {"cpu": "64", "nvidia.com/gpu": str(gpus)}},
    }


def lines(findings: list[doctor.Finding]) -> str:
    return "\n".join(finding.line() for finding in findings)


# --------------------------------------------------------------------------- Kubeflow Trainer


def test_trainer_crds_and_runtime_present():
    kube = FakeKubeAPI()
    for plural in doctor.TRAINER_CRDS:
        kube.reply("GET", f"{CRDS}/{plural}.trainer.kubeflow.org", payload=crd(plural))
    kube.reply("GET", RUNTIME, payload={"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainingRuntime", "metadata": {"name": "selflengthen-deepspeed"}})
    findings = doctor.check_trainer(cluster_config(), kube.api_client)
    kube.assert_done()
    assert all(finding.ok for finding in findings), lines(findings)
    assert "ok    training runtime: TrainingRuntime selflengthen-deepspeed exists" in lines(findings)


def test_missing_trainer_crd_and_runtime_fail_with_the_fix():
    kube = FakeKubeAPI()
    kube.reply("GET", f"{CRDS}/trainjobs.trainer.kubeflow.org", 404, status(404, "NotFound", "not found"))
    kube.reply("GET", f"{CRDS}/trainingruntimes.trainer.kubeflow.org", payload=crd("trainingruntimes", served=False))
    kube.reply("GET", f"{CRDS}/clustertrainingruntimes.trainer.kubeflow.org", payload=crd("clustertrainingruntimes"))
    kube.reply("GET", RUNTIME, 404, status(404, "NotFound", "trainingruntimes not found"))
    text = lines(doctor.check_trainer(cluster_config(), kube.api_client))
    assert "FAIL  CRD trainjobs.trainer.kubeflow.org: not installed\n      fix: install Kubeflow Trainer v2.2.0 or later" in text
    assert "FAIL  CRD trainingruntimes.trainer.kubeflow.org: serves [], not v1alpha1" in text
    assert f"FAIL  training runtime: TrainingRuntime selflengthen-deepspeed in namespace {NAMESPACE} does not exist" in text


def test_a_trainer_older_than_the_trainjobs_need_fails_naming_the_missing_fields():
    kube = FakeKubeAPI()
    kube.reply("GET", f"{CRDS}/trainjobs.trainer.kubeflow.org", payload=crd("trainjobs", without=("runtimePatches", "activeDeadlineSeconds")))
    for plural in doctor.TRAINER_CRDS[1:]:
        kube.reply("GET", f"{CRDS}/{plural}.trainer.kubeflow.org", payload=crd(plural))
    kube.reply("GET", RUNTIME, payload={"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainingRuntime", "metadata": {"name": "selflengthen-deepspeed"}})
    text = lines(doctor.check_trainer(cluster_config(), kube.api_client))
    kube.assert_done()
    assert (
        "FAIL  CRD trainjobs.trainer.kubeflow.org: its TrainJob has no spec.activeDeadlineSeconds, spec.runtimePatches "
        "(Trainer older than v2.2.0)\n      fix: install Kubeflow Trainer v2.2.0 or later"
    ) in text
    assert "ok    CRD trainingruntimes.trainer.kubeflow.org: installed, serves v1alpha1" in text


def test_inline_training_needs_no_trainer():
    config = cluster_config(execution__training="inline")
    assert doctor.check_trainer(config, FakeKubeAPI().api_client)[0].ok


# --------------------------------------------------------------------------- GPU nodes


PODS = "/api/v1/pods"
GPU = "nvidia.com/gpu"


def pod(node_name: str, *gpus: int, init: tuple[int, ...] = (), sidecars: tuple[int, ...] = ()) -> dict[str, Any]:
    """A pod bound to ``node_name`` whose containers request ``gpus``; init containers ``init``
    and sidecars (restartable init containers, listed first) ``sidecars``."""
    def container(name: str, count: int, **extra: Any) -> dict[str, Any]:
        return {"name": name, "image": "x", "resources": {"limits": {GPU: str(count)}, "requests": {GPU: str(count)}}, **extra}

    return {
        "metadata": {"name": f"pod-on-{node_name}", "namespace": "team"},
        "spec": {
            "nodeName": node_name,
            "containers": [container(f"c{i}", count) for i, count in enumerate(gpus)],
            "initContainers": [container(f"s{i}", count, restartPolicy="Always") for i, count in enumerate(sidecars)]
            + [container(f"i{i}", count) for i, count in enumerate(init)],
        },
        "status": {"phase": "Running"},
    }



def nodes_and_pods(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> FakeKubeAPI:
    return FakeKubeAPI().reply("GET", "/api/v1/nodes", payload={"items": nodes}).reply("GET", PODS, payload={"items": pods})


def test_gpu_nodes_fitting_the_serving_and_training_shapes():
    config = cluster_config(
        serving__cluster__tolerations=[GPU_TAINT], trainjob__tolerations=[GPU_TAINT],
        trainjob__node_selector={"pool": "train"}, trainjob__num_nodes=2, trainjob__gpus_per_node=8,
    )  # fmt: skip
    kube = nodes_and_pods([node("train-a", 8, labels={"pool": "train"}), node("train-b", 8, labels={"pool": "train"}), node("cpu", 0, tainted=False)], [])
    findings = doctor.check_gpu_nodes(config, kube.api_client)
    kube.assert_done()
    assert all(finding.ok for finding in findings), lines(findings)
    assert "ok    training nodes: 2 node(s) with 8 free nvidia.com/gpu, labels {'pool': 'train'}" in lines(findings)
    assert "(train-a 8 free of 8, train-b 8 free of 8)" in lines(findings)
    # the pods holding GPUs are asked for once, cluster-wide, without the terminated ones
    assert kube.requests[1].query["fieldSelector"] == "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"


def test_a_busy_node_counts_its_free_gpus_not_its_allocatable_ones():
    config = cluster_config(serving__cluster__tolerations=[GPU_TAINT], serving__cluster__gpus=4, trainjob__tolerations=[GPU_TAINT], trainjob__num_nodes=2, trainjob__gpus_per_node=8)
    kube = nodes_and_pods([node("busy", 8), node("free", 8)], [pod("busy", 2, 3), pod("free", 0)])
    text = lines(doctor.check_gpu_nodes(config, kube.api_client))
    assert "ok    serving nodes: 1 node(s) with 4 free nvidia.com/gpu, labels {}, tolerating their taints: free (busy 3 free of 8, free 8 free of 8)" in text
    assert "FAIL  training nodes: 1 of 2 node(s) have 8 free nvidia.com/gpu, labels {}, tolerating their taints; 2 needed (busy 3 free of 8, free 8 free of 8)" in text
    assert "fix: free or add GPU nodes" in text


def test_every_node_busy_fails_the_serving_shape():
    config = cluster_config(serving__cluster__tolerations=[GPU_TAINT], execution__training="inline", trainjob__gpus_per_node=0)
    kube = nodes_and_pods([node("gpu-a", 2), node("gpu-b", 1)], [pod("gpu-a", 1, 1), pod("gpu-b", 1)])
    (finding,) = doctor.check_gpu_nodes(config, kube.api_client)
    assert not finding.ok and "0 of 2 node(s) have 1 free nvidia.com/gpu" in finding.message and "gpu-a 0 free of 2, gpu-b 0 free of 1" in finding.message


@pytest.mark.parametrize(
    ("gpus", "init", "sidecars", "reserved"),
    [
        ((1, 1), (4,), (), 4),  # an init container asking more than the app containers together reserves its request
        ((2, 2), (3,), (), 4),  # else the app containers' sum
        ((2,), (2,), (1,), 3),  # a sidecar runs beside the init containers after it and beside the app containers
        ((1,), (1,), (2,), 3),
    ],
)
def test_the_effective_request_of_a_pod_with_init_containers(gpus, init, sidecars, reserved):
    busy = pod("n", *gpus, init=init, sidecars=sidecars)
    for wanted, fits in ((8 - reserved, True), (9 - reserved, False)):
        config = cluster_config(serving__cluster__tolerations=[GPU_TAINT], serving__cluster__gpus=wanted, execution__training="inline", trainjob__gpus_per_node=0)
        (finding,) = doctor.check_gpu_nodes(config, nodes_and_pods([node("n", 8)], [busy]).api_client)
        assert finding.ok is fits and f"(n {8 - reserved} free of 8)" in finding.message, finding.line()


def test_listing_nodes_refused_names_the_http_status():
    kube = FakeKubeAPI().reply("GET", "/api/v1/nodes", 403, status(403, "Forbidden", "nodes is forbidden: User alice cannot list"))
    text = lines(doctor.check_gpu_nodes(cluster_config(), kube.api_client))
    assert "FAIL  GPU nodes: listing nodes: HTTP 403" in text and "User alice cannot list" in text


def test_gpu_nodes_whose_taint_is_not_tolerated_or_too_small_fail():
    config = cluster_config(trainjob__tolerations=[GPU_TAINT], trainjob__num_nodes=2, trainjob__gpus_per_node=8)
    kube = nodes_and_pods([node("gpu-a", 8), node("gpu-b", 4)], [])
    text = lines(doctor.check_gpu_nodes(config, kube.api_client))
    assert "FAIL  serving nodes: 0 of 2 node(s) have 1 free nvidia.com/gpu, labels {}, tolerating their taints; 1 needed\n" in text  # serving tolerates no taint
    assert "FAIL  training nodes: 1 of 2 node(s) have 8 free nvidia.com/gpu, labels {}, tolerating their taints; 2 needed (gpu-a 8 free of 8, gpu-b 4 free of 4)" in text
    assert "fix: free or add GPU nodes (NVIDIA GPU operator or device plugin) or adjust trainjob.node_selector" in text


def test_listing_pods_forbidden_warns_and_falls_back_to_allocatable_gpus():
    config = cluster_config(serving__cluster__tolerations=[GPU_TAINT], trainjob__tolerations=[GPU_TAINT], trainjob__num_nodes=2, trainjob__gpus_per_node=8)
    kube = FakeKubeAPI().reply("GET", "/api/v1/nodes", payload={"items": [node("gpu-a", 8), node("gpu-b", 4)]})
    kube.reply("GET", PODS, 403, status(403, "Forbidden", 'pods is forbidden: User "alice" cannot list resource "pods" at the cluster scope'))
    warning, serving, training = doctor.check_gpu_nodes(config, kube.api_client)
    assert warning.ok and warning.warning
    assert warning.line().startswith("WARN  GPU nodes: listing the pods of all namespaces: HTTP 403")
    assert "GPUs in use are unknown, so the checks below count allocatable GPUs, not free ones" in warning.message
    assert "fix: run doctor with an identity that may list pods in all namespaces" in warning.line()
    assert serving.ok and "2 node(s) with 1 allocatable nvidia.com/gpu" in serving.message
    assert not training.ok and "1 of 2 node(s) have 8 allocatable nvidia.com/gpu" in training.message


# --------------------------------------------------------------------------- the service account


def _review(denied: set[Permission]):
    def reply(request) -> dict[str, Any]:
        attributes = request.body["spec"]["resourceAttributes"]
        resource = attributes["resource"] + (f"/{attributes['subresource']}" if attributes.get("subresource") else "")
        asked = Permission(attributes.get("group", ""), resource, attributes["verb"], attributes.get("name"))
        assert request.body["spec"]["user"] == f"system:serviceaccount:{NAMESPACE}:selflengthen-runner"
        return {**request.body, "status": {"allowed": asked not in denied}}

    return reply


def test_the_service_account_holding_every_permission_passes():
    config = cluster_config()
    permissions = run_permissions(config, ARTIFACTS)
    kube = FakeKubeAPI().reply("GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/selflengthen-runner", payload={"metadata": {"name": "selflengthen-runner"}})
    for _ in permissions:
        kube.reply("POST", SAR, 201, _review(set()))
    findings = doctor.check_service_account(config, kube.api_client, ARTIFACTS)
    kube.assert_done()
    assert findings[0].ok, lines(findings)
    asked = {(request.body["spec"]["resourceAttributes"]["verb"], request.body["spec"]["resourceAttributes"]["resource"]) for request in kube.requests[1:]}
    assert {("create", "trainjobs"), ("get", "secrets"), ("get", "pods"), ("create", "workflowtaskresults")} <= asked


def test_a_missing_permission_is_named():
    config = cluster_config()
    denied = {Permission("", "secrets", "get", ARTIFACTS), Permission("", "pods/log", "get")}
    kube = FakeKubeAPI().reply("GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/selflengthen-runner", payload={"metadata": {"name": "x"}})
    for _ in run_permissions(config, ARTIFACTS):
        kube.reply("POST", SAR, 201, _review(denied))
    text = lines(doctor.check_service_account(config, kube.api_client, ARTIFACTS))
    assert f"may not get pods/log in {NAMESPACE}, get secrets/{ARTIFACTS} in {NAMESPACE}" in text
    sub = [r.body["spec"]["resourceAttributes"] for r in kube.requests[1:] if r.body["spec"]["resourceAttributes"]["resource"] == "pods"]
    assert {"resource": "pods", "subresource": "log", "verb": "get", "namespace": NAMESPACE, "group": ""}.items() <= next(a for a in sub if a.get("subresource")).items()


def test_a_missing_service_account_and_a_refused_review_fail():
    config = cluster_config()
    kube = FakeKubeAPI().reply("GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/selflengthen-runner", 404, status(404, "NotFound", "not found"))
    assert f"FAIL  service account {NAMESPACE}/selflengthen-runner: does not exist" in lines(doctor.check_service_account(config, kube.api_client, ARTIFACTS))
    kube = FakeKubeAPI().reply("GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/selflengthen-runner", payload={"metadata": {"name": "x"}})
    kube.reply("POST", SAR, 403, status(403, "Forbidden", "subjectaccessreviews is forbidden"))
    text = lines(doctor.check_service_account(config, kube.api_client, ARTIFACTS))
    assert "HTTP 403" in text and f"kubectl auth can-i --as=system:serviceaccount:{NAMESPACE}:selflengthen-runner" in text


# --------------------------------------------------------------------------- Secrets


def test_secrets_present_with_their_keys_and_missing_ones():
    config = cluster_config(serving__cluster__hf_token_secret="hf")
    secrets = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    kube = FakeKubeAPI()
    kube.reply("GET", f"{secrets}/selflengthen-s3", payload={"metadata": {"name": "selflengthen-s3"}, "data": {"AWS_ACCESS_KEY_ID": "eA==", "AWS_SECRET_ACCESS_KEY": "eA=="}})
    kube.reply("GET", f"{secrets}/hf", payload={"metadata": {"name": "hf"}, "data": {"TOKEN": "eA=="}})
    kube.reply("GET", f"{secrets}/{ARTIFACTS}", 404, status(404, "NotFound", "not found"))
    text = lines(doctor.check_secrets(config, kube.api_client, ARTIFACTS))
    kube.assert_done()
    assert f"ok    Secret {NAMESPACE}/selflengthen-s3: exists with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in text
    assert (
        f"FAIL  Secret {NAMESPACE}/hf: has no key HF_TOKEN (serving.cluster.hf_token_secret; read by the vLLM servers)\n"
        f"      fix: kubectl -n {NAMESPACE} create secret generic hf --from-literal=HF_TOKEN=..."
    ) in text
    assert f"FAIL  Secret {NAMESPACE}/{ARTIFACTS}: does not exist (the KFP artifact store's Secret (--artifact-secret); read by the KFP launcher)" in text


def secret(name: str, *keys: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {key: "eA==" for key in keys}}


def test_with_runs_in_another_namespace_each_secret_is_checked_in_every_namespace_whose_pods_read_it():
    """Standalone KFP: steps in kubeflow, servers and TrainJobs in ns1. The API key is read by the
    steps that call a model and by vLLM; the Hub token by vLLM, the prepare step of an hf:// base
    and the export step that pushes to the Hub."""
    config = cluster_config(
        pipeline__run_namespace="kubeflow", pipeline__api_key_secret="api-key", serving__cluster__hf_token_secret="hf",
        model__base="hf://Qwen/Qwen2.5-7B-Instruct", export__enabled=True, export__hub_repo="me/long",
    )  # fmt: skip
    steps, servers = "/api/v1/namespaces/kubeflow/secrets", f"/api/v1/namespaces/{NAMESPACE}/secrets"
    kube = FakeKubeAPI()
    kube.reply("GET", f"{steps}/selflengthen-s3", payload=secret("selflengthen-s3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    kube.reply("GET", f"{servers}/selflengthen-s3", 404, status(404, "NotFound", "not found"))
    kube.reply("GET", f"{steps}/api-key", payload=secret("api-key", "SELFLENGTHEN_API_KEY"))
    kube.reply("GET", f"{servers}/api-key", 404, status(404, "NotFound", "not found"))
    kube.reply("GET", f"{servers}/hf", payload=secret("hf", "HF_TOKEN"))
    kube.reply("GET", f"{steps}/hf", payload=secret("hf", "TOKEN"))
    kube.reply("GET", f"{steps}/{ARTIFACTS}", payload=secret(ARTIFACTS, "accesskey"))
    text = lines(doctor.check_secrets(config, kube.api_client, ARTIFACTS))
    kube.assert_done()
    assert "ok    Secret kubeflow/selflengthen-s3: exists with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in text
    assert (
        f"FAIL  Secret {NAMESPACE}/selflengthen-s3: does not exist (pipeline.storage_secret; read by the model servers and the TrainJobs)\n"
        f"      fix: kubectl -n {NAMESPACE} create secret generic selflengthen-s3 --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=..."
    ) in text
    assert "ok    Secret kubeflow/api-key: exists with SELFLENGTHEN_API_KEY" in text
    assert (
        f"FAIL  Secret {NAMESPACE}/api-key: does not exist (pipeline.api_key_secret; read by the vLLM servers)\n"
        f"      fix: kubectl -n {NAMESPACE} create secret generic api-key --from-literal=SELFLENGTHEN_API_KEY=..."
    ) in text
    assert f"ok    Secret {NAMESPACE}/hf: exists with HF_TOKEN" in text
    assert "FAIL  Secret kubeflow/hf: has no key HF_TOKEN (serving.cluster.hf_token_secret; read by the prepare step and the export step)" in text
    assert f"ok    Secret kubeflow/{ARTIFACTS}: exists" in text


def test_inline_training_without_a_hub_push_reads_the_hub_token_in_the_servers_namespace_only():
    config = cluster_config(
        pipeline__run_namespace="kubeflow", serving__cluster__hf_token_secret="hf", execution__training="inline", export__enabled=True
    )
    steps, servers = "/api/v1/namespaces/kubeflow/secrets", f"/api/v1/namespaces/{NAMESPACE}/secrets"
    kube = FakeKubeAPI()
    kube.reply("GET", f"{steps}/selflengthen-s3", payload=secret("selflengthen-s3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    kube.reply("GET", f"{servers}/selflengthen-s3", 404, status(404, "NotFound", "not found"))
    kube.reply("GET", f"{servers}/hf", payload=secret("hf", "HF_TOKEN"))
    kube.reply("GET", f"{steps}/{ARTIFACTS}", payload=secret(ARTIFACTS))
    text = lines(doctor.check_secrets(config, kube.api_client, ARTIFACTS))
    kube.assert_done()
    assert f"FAIL  Secret {NAMESPACE}/selflengthen-s3: does not exist (pipeline.storage_secret; read by the model servers)" in text
    assert "Secret kubeflow/hf" not in text


# --------------------------------------------------------------------------- KFP


@pytest.mark.parametrize(
    ("tag", "passes", "message"),
    [
        ("2.17.0", True, "ok    KFP API: standalone, backend 2.17.0"),
        ("2.10.1", True, "below 2.16.0 the step pods' non-root security context is ignored"),
        ("2.4.1", False, "FAIL  KFP API: standalone, backend 2.4.1: older than 2.5.0"),
        ("unknown", False, "version 'unknown' unknown"),
    ],
)
def test_kfp_version(kfp_server: KfpServer, tag: str, passes: bool, message: str):
    kfp_server.state.tag_name = tag
    (finding,) = doctor.check_kfp(lambda: kfp_api.connect(kfp_server.url))
    assert finding.ok is passes and message in finding.line()


def test_kfp_unreachable_fails_with_the_fix():
    (finding,) = doctor.check_kfp(lambda: kfp_api.connect("http://127.0.0.1:9"))
    assert not finding.ok and "could not be reached" in finding.message and "--host" in finding.fix


# --------------------------------------------------------------------------- storage, model, benchmarks


@pytest.fixture
def s3_config(s3_server: S3Server, s3_credentials_env: None, s3_bucket: str):
    return cluster_config(
        workdir=f"s3://{s3_bucket}/runs", model__base=f"s3://{s3_bucket}/models/base",
        storage=s3_server.storage_config().model_dump(), eval__benchmarks=["longen"],
        eval__benchmark_files={"longen": f"s3://{s3_bucket}/benchmarks/longen.jsonl"},
    )  # fmt: skip


@pytest.mark.integration
def test_inputs_uploaded_by_the_command_pass_storage_model_and_benchmarks(s3_config, tmp_path: Path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (model / "model.safetensors").write_bytes(b"0" * 16)
    config = tmp_path / "run.yaml"
    config.write_text(s3_config.to_yaml())
    result = CliRunner().invoke(app, ["upload-inputs", "--config", str(config), "--model-dir", str(model)])
    assert result.exit_code == 0, result.output
    assert f"uploaded 2 file(s) of {model} to {s3_config.model.base}" in result.output
    storage = get_storage(s3_config.storage)
    findings = doctor.check_storage(s3_config, storage) + doctor.check_base_model(s3_config, storage) + doctor.check_benchmarks(s3_config, storage)
    assert all(finding.ok for finding in findings), lines(findings)
    text = lines(findings)
    assert f"{s3_config.model.base}: qwen2 config, 1 weight file(s)" in text and "longen.jsonl: " in text
    assert storage.list(s3_config.workdir) == []  # the probe is gone
    refused = CliRunner().invoke(app, ["upload-inputs", "--config", str(config), "--model-dir", str(tmp_path), "--no-benchmarks"])
    assert refused.exit_code == 2 and "no readable config.json" in refused.output


@pytest.mark.integration
def test_missing_bucket_weights_config_and_benchmark_fail(s3_config, s3_server: S3Server):
    storage = get_storage(s3_config.storage)
    assert "FAIL  base model: no config.json below" in lines(doctor.check_base_model(s3_config, storage))
    storage.write_text(f"{s3_config.model.base}/config.json", json.dumps({"model_type": "qwen2"}))
    text = lines(doctor.check_base_model(s3_config, storage))
    assert "no weights (*.safetensors, *.bin) below" in text and "selflengthen upload-inputs" in text
    assert "FAIL  benchmark longen: no such object" in lines(doctor.check_benchmarks(s3_config, storage))
    gone = s3_config.model_copy(update={"workdir": "s3://no-such-bucket-here/runs"})
    text = lines(doctor.check_storage(gone, storage))
    assert "bucket 'no-such-bucket-here' does not exist" in text and "fix: check storage.s3_endpoint" in text


@pytest.mark.integration
def test_streaming_from_s3_needs_safetensors_weights(s3_config, s3_server: S3Server):
    storage = get_storage(s3_config.storage)
    storage.write_text(f"{s3_config.model.base}/config.json", json.dumps({"model_type": "qwen2"}))
    storage.write_bytes(f"{s3_config.model.base}/pytorch_model.bin", b"0" * 16)
    assert doctor.check_base_model(s3_config, storage)[0].ok  # copied by the fetch container: any weights
    data = s3_config.model_dump()
    data["serving"]["cluster"]["stream_from_s3"] = True
    streamed = parse_config(data)
    text = lines(doctor.check_base_model(streamed, storage))
    assert "FAIL  base model: serving.cluster.stream_from_s3: vLLM's streamer reads *.safetensors only" in text
    storage.write_bytes(f"{s3_config.model.base}/model.safetensors", b"0" * 16)
    assert doctor.check_base_model(streamed, storage)[0].ok


@pytest.mark.integration
def test_the_command_prints_every_check_and_exits_1_on_a_failure(s3_config, kfp_server: KfpServer, tmp_path: Path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text(s3_config.to_yaml())
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--host", kfp_server.url])
    assert result.exit_code == 1
    assert "ok    storage: " in result.output and "ok    KFP API: standalone, backend 2.17.0" in result.output
    assert "FAIL  base model: no config.json" in result.output
    assert "FAIL  Kubernetes API: no Kubernetes API to talk to" in result.output
    assert result.output.rstrip().endswith("failed")


@pytest.mark.parametrize(("configured", "given"), [(None, "kubeflow"), ("kubeflow", None)])  # --run-namespace, or pipeline.run_namespace
def test_standalone_kfp_checks_the_runner_in_the_kfp_namespace_and_the_steps_rights_in_the_objects_namespace(configured, given):
    config = cluster_config(pipeline__service_account="pipeline-runner", pipeline__run_namespace=configured)
    kube = FakeKubeAPI().reply("GET", "/api/v1/namespaces/kubeflow/serviceaccounts/pipeline-runner", payload={"metadata": {"name": "pipeline-runner"}})
    for _ in run_permissions(config, ARTIFACTS):
        kube.reply("POST", SAR, 201, lambda request: {**request.body, "status": {"allowed": True}})
    assert doctor.check_service_account(config, kube.api_client, ARTIFACTS, given)[0].ok
    asked = {(r.body["spec"]["resourceAttributes"]["resource"], r.body["spec"]["resourceAttributes"]["namespace"]) for r in kube.requests[1:]}
    assert ("deployments", NAMESPACE) in asked and ("secrets", "kubeflow") in asked and ("secrets", NAMESPACE) not in asked
    assert {r.body["spec"]["user"] for r in kube.requests[1:]} == {"system:serviceaccount:kubeflow:pipeline-runner"}


def test_the_model_cache_pvc_must_exist_be_read_write_many_and_bound():
    config = cluster_config(execution__model_cache_pvc="models")
    claims = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/models"
    def claim(modes, phase):
        return {"metadata": {"name": "models"}, "spec": {"accessModes": modes}, "status": {"phase": phase}}
    kube = FakeKubeAPI().reply("GET", claims, payload=claim(["ReadWriteMany"], "Bound"))
    assert doctor.check_model_cache(config, kube.api_client)[0].line() == f"ok    model cache PVC {NAMESPACE}/models: ReadWriteMany, bound"
    standalone = cluster_config(execution__model_cache_pvc="models", execution__training="inline", pipeline__run_namespace="kubeflow")
    kube = FakeKubeAPI().reply("GET", claims, payload=claim(["ReadWriteMany"], "Bound"))
    (finding,) = doctor.check_model_cache(standalone, kube.api_client)
    assert finding.ok and "the inline train step runs in kubeflow, where it cannot mount it: it copies the model" in finding.message
    kube = FakeKubeAPI().reply("GET", claims, payload=claim(["ReadWriteOnce"], "Bound"))
    assert "access modes ['ReadWriteOnce']: servers and trainers on several nodes need ReadWriteMany" in lines(doctor.check_model_cache(config, kube.api_client))
    kube = FakeKubeAPI().reply("GET", claims, payload=claim(["ReadWriteMany"], "Pending"))
    assert f"FAIL  model cache PVC {NAMESPACE}/models: is Pending" in lines(doctor.check_model_cache(config, kube.api_client))
    kube = FakeKubeAPI().reply("GET", claims, 404, status(404, "NotFound", "not found"))
    assert "does not exist\n      fix: create it ReadWriteMany (the chart: --set modelCache.create=true)" in lines(doctor.check_model_cache(config, kube.api_client))
    assert doctor.check_model_cache(cluster_config(), FakeKubeAPI().api_client)[0].ok
