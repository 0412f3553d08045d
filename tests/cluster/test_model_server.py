"""The serve and teardown steps on Kubernetes: the vLLM Deployment + Service, and the API calls."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s

from selflengthen.cluster.objects import to_manifest
from selflengthen.cluster.ownership import RunOwner, parse_expiry
from selflengthen.errors import EndpointError
from selflengthen.serving.cluster import build_model_server, serve_role_in_cluster, teardown_role_in_cluster
from selflengthen.serving.plan import ServerPlan
from tests.cluster.conftest import NAMESPACE, WALL_CLOCK, cluster_config
from tests.cluster.fake_kube import FakeKubeAPI, echo, status
from tests.fixtures.k8s_validation import validate_object

NAME = "sl-demo-generator-it1"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
SELECTOR_ALL = "selflengthen.io/run-id=demo,app.kubernetes.io/component=model-server"
SELECTOR_ONE = f"{SELECTOR_ALL},selflengthen.io/role=generator,selflengthen.io/iteration=1"


BASE_PLAN = ServerPlan(model="s3://models/base", names=("gen",), roles={"generator": "gen"})


def role_server(config, role: str, iteration: int, model: str, adapter: str | None = None, **options: Any):
    """The objects of ``role``'s own model server (``model``, with ``adapter`` when given)."""
    return build_model_server(config, role, iteration, ServerPlan.for_role(config, role, model, adapter), **options)


def manifest(obj: Any) -> dict[str, Any]:
    return json.loads(json.dumps(to_manifest(obj)))


def pod_spec(server) -> dict[str, Any]:
    return manifest(server.deployment)["spec"]["template"]["spec"]


def containers(server) -> dict[str, dict[str, Any]]:
    spec = pod_spec(server)
    return {container["name"]: container for container in spec["containers"] + spec.get("initContainers", [])}


# --------------------------------------------------------------------------- the objects


def test_base_model_from_s3_is_fetched_by_an_init_container_and_served_under_the_role_name():
    config = cluster_config()
    server = role_server(config, "generator", 1, "s3://models/base")
    vllm, fetch = containers(server)["vllm"], containers(server)["fetch-model"]
    assert vllm["image"] == config.serving.cluster.image
    assert vllm["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert vllm["args"] == [
        "--model", "/models/base", "--served-model-name", "gen", "--host", "0.0.0.0", "--port", "8000",
        "--max-model-len", "32768", "--tensor-parallel-size", "1", "--gpu-memory-utilization", "0.9",
    ]  # fmt: skip
    assert fetch["command"] == ["python", "-m", "selflengthen.cluster.fetch"]
    assert fetch["args"] == ["s3://models/base=/models/base"]
    assert fetch["image"] == config.pipeline.image
    assert server.base_url == f"http://{NAME}.{NAMESPACE}.svc:8000/v1"
    assert server.served_model == "gen"


def test_an_adapter_is_served_by_the_role_name_over_the_base():
    config = cluster_config(training__lora__r=24)
    server = role_server(config, "extender", 2, "s3://models/base", "s3://runs/demo/iteration-1/train/extender/adapter"
    )
    vllm, fetch = containers(server)["vllm"], containers(server)["fetch-model"]
    args = vllm["args"]
    assert args[args.index("--served-model-name") + 1] == "ext-base"
    assert args[args.index("--enable-lora") : args.index("--host")] == [
        "--enable-lora", "--lora-modules", "ext=/models/adapters/ext", "--max-lora-rank", "32", "--max-loras", "1",
    ]  # fmt: skip
    assert fetch["args"] == [
        "s3://models/base=/models/base",
        "s3://runs/demo/iteration-1/train/extender/adapter=/models/adapters/ext",
    ]


def test_a_hub_model_is_downloaded_by_vllm_with_the_token_from_its_secret():
    config = cluster_config(serving__cluster__hf_token_secret="hf")
    server = role_server(config, "generator", 1, "Qwen/Qwen2.5-7B-Instruct")
    spec = pod_spec(server)
    assert "initContainers" not in spec
    vllm = spec["containers"][0]
    assert vllm["args"][:2] == ["--model", "Qwen/Qwen2.5-7B-Instruct"]
    env = {item["name"]: item for item in vllm["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}
    assert "HF_HUB_OFFLINE" not in env


@pytest.mark.parametrize(
    ("model", "adapter", "message"),
    [
        ("/data/models/base", None, "path on the pipeline pod"),
        ("file:///models/base", None, "path on the pipeline pod"),
        ("s3://models/base", "/tmp/adapter", "path on the pipeline pod"),
        ("s3://models/base", "Org/some-adapter", "must be on object storage"),
    ],
)
def test_models_that_pods_cannot_read_are_refused(model, adapter, message):
    with pytest.raises(EndpointError, match=message):
        role_server(cluster_config(), "generator", 1, model, adapter)


def test_a_lora_rank_vllm_cannot_serve_is_refused():
    with pytest.raises(EndpointError, match="training.lora.r = 1024"):
        role_server(cluster_config(training__lora__r=1024), "generator", 1, "s3://m/b", "s3://m/adapter")


def test_pods_run_non_root_without_capabilities_on_a_read_only_root():
    server = role_server(cluster_config(), "generator", 1, "s3://models/base", "s3://m/adapter")
    spec = pod_spec(server)
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert spec["automountServiceAccountToken"] is False
    for container in containers(server).values():
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "privileged": False,
            "readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
        }  # fmt: skip
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert "/tmp" in mounts, "HOME and the caches need a writable folder"
    env = {item["name"]: item.get("value") for item in containers(server)["vllm"]["env"]}
    assert env["HOME"] == "/tmp" and env["USER"] == "vllm"
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["models"]["emptyDir"] == volumes["scratch"]["emptyDir"] == {"sizeLimit": "64Gi"}  # serving.cluster.model_storage
    assert containers(server)["vllm"]["volumeMounts"][0] == {"name": "models", "mountPath": "/models", "readOnly": True}


def test_probes_resources_and_placement():
    config = cluster_config(
        serving__cluster__gpus=2,
        serving__cluster__tensor_parallel_size=2,
        serving__cluster__node_selector={"nvidia.com/gpu.product": "H100"},
        serving__cluster__tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        serving__cluster__ready_timeout_s=600,
    )
    server = role_server(config, "generator", 1, "s3://models/base")
    spec = pod_spec(server)
    vllm = spec["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert vllm["startupProbe"]["periodSeconds"] * vllm["startupProbe"]["failureThreshold"] == 600
    assert vllm["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "ephemeral-storage": "64Gi", "nvidia.com/gpu": "2"}
    assert vllm["resources"]["requests"] == vllm["resources"]["limits"]
    assert vllm["args"][vllm["args"].index("--tensor-parallel-size") + 1] == "2"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    deployment = manifest(server.deployment)["spec"]
    assert deployment["strategy"] == {"type": "Recreate"}
    assert deployment["progressDeadlineSeconds"] == 600


def test_labels_select_the_run_role_and_iteration():
    server = role_server(cluster_config(), "generator", 1, "s3://models/base")
    deployment, service = manifest(server.deployment), manifest(server.service)
    labels = {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "selflengthen",
        "app.kubernetes.io/managed-by": "selflengthen",
        "selflengthen.io/run-id": "demo",
        "selflengthen.io/role": "generator",
        "selflengthen.io/iteration": "1",
    }
    assert deployment["metadata"]["labels"] == labels == service["metadata"]["labels"]
    assert deployment["spec"]["template"]["metadata"]["labels"] == labels
    assert deployment["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/instance": NAME}}
    assert service["spec"]["selector"] == {"app.kubernetes.io/instance": NAME}
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]


def test_credentials_come_from_secrets_and_never_appear_in_the_spec():
    config = cluster_config(pipeline__api_key_secret="api-key", storage__access_key_env="S3_KEY")
    server = role_server(config, "generator", 1, "s3://models/base", "s3://m/adapter")
    fetch_env = {item["name"]: item for item in containers(server)["fetch-model"]["env"]}
    assert fetch_env["S3_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "selflengthen-s3", "key": "AWS_ACCESS_KEY_ID"}}
    assert fetch_env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "selflengthen-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert json.loads(fetch_env["SELFLENGTHEN_STORAGE_CONFIG"]["value"])["s3_endpoint"] == "minio.ns1.svc:9000"
    vllm_env = {item["name"]: item for item in containers(server)["vllm"]["env"]}
    assert vllm_env["VLLM_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "api-key", "key": "SELFLENGTHEN_API_KEY"}}
    credentials = {"S3_KEY", "AWS_SECRET_ACCESS_KEY", "VLLM_API_KEY"}
    for container in containers(server).values():
        assert "--api-key" not in container.get("args", [])
        for item in container["env"]:
            assert item["name"] not in credentials or set(item) == {"name", "valueFrom"}, item


def test_long_run_ids_give_valid_dns_names():
    run_id = "a-very-long-run-identifier-that-goes-on-and-on-and-on-until-63"
    server = role_server(cluster_config(run_id=run_id), "extender", 12, "s3://models/base")
    assert len(server.name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", server.name)
    other = role_server(cluster_config(run_id=run_id), "extender", 13, "s3://models/base")
    assert other.name != server.name


def test_the_objects_are_valid_kubernetes_objects():
    config = cluster_config(
        pipeline__api_key_secret="k", serving__cluster__tolerations=[{"key": "gpu", "operator": "Exists"}]
    )
    server = role_server(config, "generator", 1, "s3://models/base", "s3://m/adapter")
    validate_object(manifest(server.deployment))
    validate_object(manifest(server.service))


def test_the_run_owner_and_its_lease_go_on_every_object():
    owner = RunOwner(k8s.V1OwnerReference(api_version="argoproj.io/v1alpha1", kind="Workflow", name="wf-1", uid="wf-uid", controller=False, block_owner_deletion=False))
    config = cluster_config()
    server = role_server(config, "generator", 1, "s3://models/base", owner=owner)
    for obj in (server.deployment, server.service):
        metadata = manifest(obj)["metadata"]
        assert metadata["ownerReferences"] == [
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "wf-1", "uid": "wf-uid", "controller": False, "blockOwnerDeletion": False}
        ]
        assert metadata["annotations"]["selflengthen.io/workflow"] == "wf-1"
        assert metadata["annotations"]["selflengthen.io/workflow-uid"] == "wf-uid"
        lease = parse_expiry(metadata["annotations"]["selflengthen.io/lease-expires"])
        assert lease == WALL_CLOCK + config.execution.lease_s
        assert metadata["labels"]["selflengthen.io/run-id"] == "demo"
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "selflengthen"


# --------------------------------------------------------------------------- the API calls


def step_pod(uid: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The step's own pod as Argo creates it: controlled by its Workflow."""
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "selflengthen-x7k2p", "uid": "wf-uid", "controller": True, "blockOwnerDeletion": True}
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "run-abc-serve", "namespace": namespace, "uid": uid, "ownerReferences": [workflow]}}


def deployment_state(config, *, ready: bool, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = manifest(role_server(config, "generator", 1, "s3://models/base").deployment)
    body["metadata"]["generation"] = 1
    body["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1 if ready else 0,
    }
    if conditions:
        body["status"]["conditions"] = conditions
    return body


def pod_list(*statuses: dict[str, Any], conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    pod = {
        "metadata": {"name": f"{NAME}-7d9f-abcde"},
        "spec": {"containers": [{"name": "vllm"}]},
        "status": {"containerStatuses": list(statuses), "conditions": conditions or []},
    }
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod]}


def waiting(reason: str, message: str = "", last_words: str | None = None) -> dict[str, Any]:
    """A container status waiting for ``reason``; ``last_words``: the termination message of its last run."""
    state: dict[str, Any] = {"name": "vllm", "image": "x", "imageID": "", "ready": False, "restartCount": 2}
    state["state"] = {"waiting": {"reason": reason, "message": message}}
    if last_words is not None:
        state["lastState"] = {"terminated": {"exitCode": 1, "message": last_words}}
    return state


def test_serve_creates_the_objects_waits_until_ready_and_returns_the_url(kube: FakeKubeAPI, clock, monkeypatch):
    monkeypatch.setenv("POD_NAME", "run-abc-serve")
    monkeypatch.setenv("POD_UID", "1234")
    config = cluster_config()
    kube.reply("GET", f"{PODS}/run-abc-serve", 200, step_pod("1234"))
    kube.reply("POST", SERVICES, 201, echo(uid="s1"))
    kube.reply("POST", DEPLOYMENTS, 201, echo(uid="d1", generation=1))
    kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=False))
    kube.reply("GET", PODS, 200, pod_list(waiting("ContainerCreating")))
    kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=True))

    plan = ServerPlan.for_role(config, "generator", "s3://models/base")
    url = serve_role_in_cluster(config, "generator", 1, plan, api_client=kube.api_client, poll_interval_s=5)

    assert url == f"http://{NAME}.{NAMESPACE}.svc:8000/v1"
    server = role_server(config, "generator", 1, "s3://models/base")
    service_body, deployment_body = kube.requests[1].body, kube.requests[2].body
    owner = [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "selflengthen-x7k2p", "uid": "wf-uid", "controller": False, "blockOwnerDeletion": False}]
    expected = {"service": manifest(server.service), "deployment": manifest(server.deployment)}
    for kind, body in (("service", service_body), ("deployment", deployment_body)):
        assert body["metadata"].pop("ownerReferences") == owner
        annotations = body["metadata"].pop("annotations")
        assert annotations["selflengthen.io/workflow-uid"] == "wf-uid"
        expected[kind]["metadata"].pop("annotations")
        assert body == expected[kind]
    assert kube.requests[4].query == {"labelSelector": f"app.kubernetes.io/instance={NAME}"}
    assert clock.now == 5


def test_serve_again_replaces_the_objects_of_a_previous_attempt(kube: FakeKubeAPI, clock):
    config = cluster_config()
    kube.reply("POST", SERVICES, 409, status(409, "AlreadyExists", f'services "{NAME}" already exists'))
    kube.reply("PUT", f"{SERVICES}/{NAME}", 200, echo())
    kube.reply("POST", DEPLOYMENTS, 409, status(409, "AlreadyExists", f'deployments.apps "{NAME}" already exists'))
    kube.reply("PUT", f"{DEPLOYMENTS}/{NAME}", 200, echo(generation=2))
    kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=True))

    serve_role_in_cluster(config, "generator", 1, ServerPlan.for_role(config, "generator", "s3://models/base"), api_client=kube.api_client)

    server = role_server(config, "generator", 1, "s3://models/base")
    assert kube.requests[1].body == manifest(server.service)
    assert kube.requests[3].body == manifest(server.deployment)


def test_a_forbidden_create_names_the_object_and_rbac(kube: FakeKubeAPI):
    message = 'services is forbidden: User "system:serviceaccount:ns1:default" cannot create resource "services"'
    kube.reply("POST", SERVICES, 403, status(403, "Forbidden", message))
    with pytest.raises(EndpointError) as raised:
        serve_role_in_cluster(cluster_config(), "generator", 1, BASE_PLAN, api_client=kube.api_client)
    text = str(raised.value)
    assert f"creating Service {NAMESPACE}/{NAME}" in text and "HTTP 403" in text and "RBAC" in text
    assert 'cannot create resource "services"' in text


def test_a_conflicting_replace_is_a_clear_error(kube: FakeKubeAPI):
    kube.reply("POST", SERVICES, 201, echo())
    kube.reply("POST", DEPLOYMENTS, 409, status(409, "AlreadyExists", "already exists"))
    kube.reply(
        "PUT",
        f"{DEPLOYMENTS}/{NAME}",
        409,
        status(409, "Conflict", "the object has been modified; please apply your changes to the latest version"),
    )
    with pytest.raises(
        EndpointError, match=r"creating Deployment ns1/sl-demo-generator-it1: HTTP 409 - conflict.*has been modified"
    ):
        serve_role_in_cluster(cluster_config(), "generator", 1, BASE_PLAN, api_client=kube.api_client)


def test_an_invalid_object_names_the_fields(kube: FakeKubeAPI):
    causes = [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "64GB"',
            "field": "spec.template.spec.containers[0].resources.limits[memory]",
        }
    ]
    kube.reply("POST", SERVICES, 201, echo())
    kube.reply("POST", DEPLOYMENTS, 422, status(422, "Invalid", "Deployment.apps is invalid", causes))
    with pytest.raises(EndpointError, match=r"HTTP 422 .*invalid.*resources\.limits\[memory\]: Invalid value"):
        serve_role_in_cluster(cluster_config(), "generator", 1, BASE_PLAN, api_client=kube.api_client)


def test_an_unreachable_api_server_is_a_clear_error(kube: FakeKubeAPI):
    kube.fail("POST", SERVICES, urllib3.exceptions.MaxRetryError(None, "/api", "Connection refused"))
    with pytest.raises(EndpointError, match="could not be reached"):
        serve_role_in_cluster(cluster_config(), "generator", 1, BASE_PLAN, api_client=kube.api_client)


def expect_teardown(kube: FakeKubeAPI, *, selector: str = SELECTOR_ONE) -> None:
    kube.reply(
        "GET",
        DEPLOYMENTS,
        200,
        {"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {}, "items": [{"metadata": {"name": NAME}}]},
    )
    kube.reply("DELETE", f"{DEPLOYMENTS}/{NAME}", 200, status(200, "", "deleted"))
    kube.reply(
        "GET",
        SERVICES,
        200,
        {"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": NAME}}]},
    )
    kube.reply("DELETE", f"{SERVICES}/{NAME}", 200, status(200, "", "deleted"))


POD = f"{NAME}-7d9f-abcde"
EVENTS = f"/api/v1/namespaces/{NAMESPACE}/events"
UNSCHEDULABLE = [
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}
]


def events(*items: tuple[str, str, str]) -> dict[str, Any]:
    """An EventList of (type, reason, message), oldest first."""
    return {
        "kind": "EventList", "apiVersion": "v1", "metadata": {},
        "items": [
            {"metadata": {"name": f"e{i}"}, "involvedObject": {"kind": "Pod", "name": POD}, "type": kind, "reason": reason,
             "message": message, "count": 1, "lastTimestamp": f"2026-01-01T00:00:0{i}Z"}
            for i, (kind, reason, message) in enumerate(items)
        ],
    }  # fmt: skip


FAIL_FAST = [
    # (pod state, settings, the log answer: text or an error status, what the message shows)
    (pod_list(waiting("InvalidImageName", 'invalid reference format: "vllm/vllm-openai:v0.11.0 "')), {}, "", "InvalidImageName"),
    (pod_list(waiting("ErrImageNeverPull", "image not present with pull policy Never")), {}, "", "ErrImageNeverPull"),
    (pod_list(waiting("CrashLoopBackOff", "back-off 20s restarting failed container", "torch.OutOfMemoryError: CUDA out of memory\n")),
     {}, "INFO loading weights\ntorch.OutOfMemoryError: CUDA out of memory", "last exit code 1: torch.OutOfMemoryError"),
    (pod_list(waiting("ImagePullBackOff", 'Back-off pulling image "vllm/vllm-openai:v0.11.0"')), {"execution__start_grace_s": 0}, "", "ImagePullBackOff"),
    (pod_list(waiting("ErrImagePull", "manifest unknown")), {"execution__start_grace_s": 0}, "", "ErrImagePull"),
    (pod_list(waiting("CreateContainerConfigError", 'secret "selflengthen-s3" not found')), {"execution__start_grace_s": 0}, "", "CreateContainerConfigError"),
    (pod_list(waiting("CreateContainerError", "mount failed")), {"execution__start_grace_s": 0}, "", "CreateContainerError"),
    (pod_list(conditions=UNSCHEDULABLE), {"execution__start_grace_s": 0}, None, "Unschedulable: 0/3 nodes are available"),
]  # fmt: skip


@pytest.mark.parametrize(("pods", "settings", "log", "cause"), FAIL_FAST, ids=[case[3].split(":")[0] for case in FAIL_FAST])
def test_a_pod_that_cannot_start_ends_the_wait_at_once_with_its_events_and_log(kube: FakeKubeAPI, clock, pods, settings, log, cause):
    config = cluster_config(**settings)
    kube.reply("POST", SERVICES, 201, echo())
    kube.reply("POST", DEPLOYMENTS, 201, echo(generation=1))
    kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=False))
    kube.reply("GET", PODS, 200, pods)
    kube.reply("GET", EVENTS, 200, events(("Normal", "Scheduled", "Successfully assigned"), ("Warning", "Failed", "the kubelet's own words")))
    if log is not None:
        answer = (200, log) if log else (400, status(400, "BadRequest", 'container "vllm" in pod is waiting to start'))
        kube.reply("GET", f"{PODS}/{POD}/log", *answer)
    expect_teardown(kube)

    with pytest.raises(EndpointError) as raised:
        serve_role_in_cluster(config, "generator", 1, ServerPlan.for_role(config, "generator", "s3://models/base"), api_client=kube.api_client)
    message = str(raised.value)
    assert clock.now == 0, "no waiting"
    assert "cannot start" in message and cause in message
    assert "event Warning Failed: the kubelet's own words" in message
    if log:
        assert "log: torch.OutOfMemoryError: CUDA out of memory" in message
        log_request = next(r for r in kube.requests if r.path.endswith("/log"))
        assert log_request.query["previous"] in (True, "true") and int(log_request.query["tailLines"]) == 30  # the crashed run's log
    elif log == "":
        assert "no log of container vllm" in message
    events_request = next(r for r in kube.requests if r.path == EVENTS)
    assert events_request.query["fieldSelector"] == f"involvedObject.kind=Pod,involvedObject.name={POD}"


def test_a_possibly_passing_state_gets_its_grace_then_fails(kube: FakeKubeAPI, clock):
    config = cluster_config(execution__start_grace_s=10)
    pulling = pod_list(waiting("ImagePullBackOff", "rate limited"))
    kube.reply("POST", SERVICES, 201, echo())
    kube.reply("POST", DEPLOYMENTS, 201, echo(generation=1))
    for _ in range(3):  # t = 0, 5 within the grace; t = 10 ends it
        kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=False))
        kube.reply("GET", PODS, 200, pulling)
    kube.reply("GET", EVENTS, 200, events(("Warning", "Failed", "toomanyrequests")))
    kube.reply("GET", f"{PODS}/{POD}/log", 400, status(400, "BadRequest", "waiting to start"))
    expect_teardown(kube)
    with pytest.raises(EndpointError, match=r"ImagePullBackOff: rate limited \(for 10 s\)[\s\S]*toomanyrequests"):
        serve_role_in_cluster(config, "generator", 1, ServerPlan.for_role(config, "generator", "s3://models/base"), api_client=kube.api_client, poll_interval_s=5)
    assert clock.now == 10


def test_a_server_that_never_gets_ready_times_out_with_the_pod_states(kube: FakeKubeAPI, clock):
    config = cluster_config(serving__cluster__ready_timeout_s=10)
    unschedulable = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        }
    ]
    kube.reply("POST", SERVICES, 201, echo())
    kube.reply("POST", DEPLOYMENTS, 201, echo(generation=1))
    for _ in range(3):  # t = 0, 5, 10
        kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=False))
        kube.reply("GET", PODS, 200, pod_list(conditions=unschedulable))
    kube.reply("GET", PODS, 200, pod_list(conditions=unschedulable))
    expect_teardown(kube)

    with pytest.raises(EndpointError) as raised:
        serve_role_in_cluster(config, "generator", 1, ServerPlan.for_role(config, "generator", "s3://models/base"), api_client=kube.api_client, poll_interval_s=5)
    assert "not ready after 10 s (serving.cluster.ready_timeout_s)" in str(raised.value)
    assert "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in str(raised.value)
    assert clock.now == 10


def test_a_passed_progress_deadline_fails(kube: FakeKubeAPI, clock):
    config = cluster_config()
    deadline = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": f'ReplicaSet "{NAME}-7d9f" has timed out progressing.',
        }
    ]
    kube.reply("POST", SERVICES, 201, echo())
    kube.reply("POST", DEPLOYMENTS, 201, echo(generation=1))
    kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=False, conditions=deadline))
    pulling = pod_list(waiting("ImagePullBackOff", 'Back-off pulling image "vllm/vllm-openai"'))
    kube.reply("GET", PODS, 200, pulling)
    kube.reply("GET", PODS, 200, pulling)
    expect_teardown(kube)
    with pytest.raises(EndpointError, match=r"has timed out progressing.*ImagePullBackOff"):
        serve_role_in_cluster(config, "generator", 1, ServerPlan.for_role(config, "generator", "s3://models/base"), api_client=kube.api_client)


def test_transient_api_errors_while_waiting_are_retried(kube: FakeKubeAPI, clock):
    config = cluster_config()
    kube.reply("POST", SERVICES, 201, echo())
    kube.reply("POST", DEPLOYMENTS, 201, echo(generation=1))
    kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 503, status(503, "ServiceUnavailable", "etcd leader changed"))
    kube.reply("GET", f"{DEPLOYMENTS}/{NAME}", 200, deployment_state(config, ready=True))
    assert serve_role_in_cluster(config, "generator", 1, ServerPlan.for_role(config, "generator", "s3://models/base"), api_client=kube.api_client).endswith("/v1")


def test_teardown_deletes_by_labels_and_tolerates_what_is_gone(kube: FakeKubeAPI):
    expect_teardown(kube)
    assert teardown_role_in_cluster(cluster_config(), "generator", 1, api_client=kube.api_client) == [
        f"Deployment/{NAME}",
        f"Service/{NAME}",
    ]
    assert kube.requests[0].query == {"labelSelector": SELECTOR_ONE}

    kube.reply(
        "GET",
        DEPLOYMENTS,
        200,
        {"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {}, "items": [{"metadata": {"name": NAME}}]},
    )
    kube.reply("DELETE", f"{DEPLOYMENTS}/{NAME}", 404, status(404, "NotFound", "not found"))
    kube.reply("GET", SERVICES, 200, {"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": []})
    assert teardown_role_in_cluster(cluster_config(), api_client=kube.api_client) == []
    assert kube.requests[4].query == {"labelSelector": SELECTOR_ALL}


def test_teardown_without_permission_is_a_clear_error(kube: FakeKubeAPI):
    kube.reply("GET", DEPLOYMENTS, 403, status(403, "Forbidden", 'cannot list resource "deployments"'))
    with pytest.raises(EndpointError, match=r"deleting model servers .* in namespace ns1: HTTP 403 - forbidden"):
        teardown_role_in_cluster(cluster_config(), "generator", 1, api_client=kube.api_client)


# --------------------------------------------------------------------------- serving.layout shared, replicas


def test_the_shared_server_serves_the_base_and_both_roles_as_adapters_by_name():
    config = cluster_config(serving__cluster__replicas=3)
    adapters = {"generator": "s3://runs/demo/iteration-1/train/generator/adapter", "extender": "s3://runs/demo/iteration-1/train/extender/adapter"}
    plan = ServerPlan.shared(config, "s3://models/base", on_base=[], adapters=adapters)
    server = build_model_server(config, "shared", 2, plan)
    vllm, fetch = containers(server)["vllm"], containers(server)["fetch-model"]
    assert vllm["args"][: vllm["args"].index("--host")] == [
        "--model", "/models/base", "--served-model-name", "base", "--enable-lora",
        "--lora-modules", "gen=/models/adapters/gen", "ext=/models/adapters/ext", "--max-lora-rank", "8", "--max-loras", "2",
    ]  # fmt: skip
    assert fetch["args"] == [
        "s3://models/base=/models/base",
        f"{adapters['generator']}=/models/adapters/gen",
        f"{adapters['extender']}=/models/adapters/ext",
    ]
    assert plan.roles == {"base": "base", "generator": "gen", "extender": "ext"}
    body = manifest(server.deployment)
    assert server.name == "sl-demo-shared-it2" and body["spec"]["replicas"] == 3
    assert body["metadata"]["labels"]["selflengthen.io/role"] == "shared"
    assert manifest(server.service)["spec"]["selector"] == {"app.kubernetes.io/instance": "sl-demo-shared-it2"}


def test_while_the_roles_are_the_base_the_shared_server_answers_to_every_name_without_lora():
    config = cluster_config()
    plan = ServerPlan.shared(config, "s3://models/base", on_base=["generator", "extender"], adapters={})
    args = containers(build_model_server(config, "shared", 1, plan))["vllm"]["args"]
    assert args[: args.index("--host")] == ["--model", "/models/base", "--served-model-name", "base", "gen", "ext"]
    assert plan.roles == {"base": "base", "generator": "gen", "extender": "ext"}
