"""The train step on Kubernetes: the TrainJob, its ConfigMap, and watching it to its end."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client as k8s

from selflengthen.cluster.objects import to_manifest
from selflengthen.cluster.ownership import RunOwner, lease_expiry
from selflengthen.cluster.trainjob import SPEC_FIELDS, build_config_map, build_trainjob, run_trainjob
from selflengthen.config import parse_config
from selflengthen.errors import TrainingError
from selflengthen.training.launch import TrainingRequest
from tests.cluster.conftest import NAMESPACE, WALL_CLOCK, cluster_config
from tests.cluster.fake_kube import FakeKubeAPI, echo, status
from tests.fixtures.k8s_validation import InvalidObject, validate_crd_object

NAME = "sl-demo-extender-it2"
TRAINJOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
URIS = {
    "data_uri": "s3://runs/demo/iteration-2/sft/extender",
    "base_model_uri": "s3://models/base",
    "output_uri": "s3://runs/demo/iteration-2/train/extender",
    "adapter_from_uri": "s3://runs/demo/iteration-1/train/extender/adapter",
}


def request(**overrides: Any) -> TrainingRequest:
    return TrainingRequest(role="extender", **{**URIS, **overrides})


def trainjob(config=None, **overrides: Any) -> dict[str, Any]:
    return build_trainjob(config or cluster_config(), 2, request(**overrides))


POD = f"{NAME}-node-0-0-abcde"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


def running() -> dict[str, Any]:
    return {"name": "node", "image": "x", "imageID": "", "ready": True, "restartCount": 0, "state": {"running": {}}}


def pods(*statuses: dict[str, Any]) -> dict[str, Any]:
    pod = {"metadata": {"name": POD}, "spec": {"containers": [{"name": "node"}]}, "status": {"containerStatuses": list(statuses)}}
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod]}


def with_conditions(job: dict[str, Any], *conditions: dict[str, str]) -> dict[str, Any]:
    state = copy.deepcopy(job)
    state["metadata"]["uid"] = "tj-uid"
    state["status"] = {
        "conditions": [{"status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z", **c} for c in conditions]
    }
    return state


CREATED = {"type": "Created", "reason": "JobSetCreated", "message": "Succeeded to create Jobset"}
COMPLETE = {"type": "Complete", "reason": "JobSetCompleted", "message": "jobset completed successfully"}
FAILED = {
    "type": "Failed",
    "reason": "JobSetFailed",
    "message": 'jobset failed: ReplicatedJob "node" failed: exit code 1',
}


# --------------------------------------------------------------------------- the objects


def test_the_trainjob_runs_the_train_command_under_torchrun_on_the_runtime():
    job = trainjob()
    spec = job["spec"]
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"]["name"] == NAME and job["metadata"]["namespace"] == NAMESPACE
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": "selflengthen-deepspeed",
    }
    assert spec["trainer"]["command"] == [
        "torchrun", "-m", "selflengthen.training",
        "--role", "extender",
        "--data", URIS["data_uri"],
        "--base-model", URIS["base_model_uri"],
        "--output", URIS["output_uri"],
        "--config", "/etc/selflengthen/config.json",
        "--adapter-from", URIS["adapter_from_uri"],
    ]  # fmt: skip
    assert spec["trainer"]["image"] == cluster_config().trainjob.image
    assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["numProcPerNode"] == 4
    node = {"memory": "256Gi", "ephemeral-storage": "200Gi", "nvidia.com/gpu": "4"}  # host memory for ZeRO-3 offload
    assert spec["trainer"]["resourcesPerNode"] == {"requests": node, "limits": node}
    assert spec["activeDeadlineSeconds"] == 60


def test_credentials_are_secret_references_and_the_config_is_a_mounted_configmap():
    job = trainjob(cluster_config(storage__secret_key_env="S3_SECRET"))
    env = {item["name"]: item for item in job["spec"]["trainer"]["env"]}
    assert env == {
        "AWS_ACCESS_KEY_ID": {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "selflengthen-s3", "key": "AWS_ACCESS_KEY_ID"}},
        },
        "S3_SECRET": {
            "name": "S3_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "selflengthen-s3", "key": "AWS_SECRET_ACCESS_KEY"}},
        },
    }
    (patch,) = job["spec"]["runtimePatches"]
    assert patch["manager"] == "selflengthen.io/train-step"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]
    assert node["name"] == "node"
    assert pod["spec"]["volumes"] == [{"name": "selflengthen-config", "configMap": {"name": f"{NAME}-config"}}]
    assert pod["spec"]["containers"] == [
        {
            "name": "node",
            "volumeMounts": [{"name": "selflengthen-config", "mountPath": "/etc/selflengthen", "readOnly": True}],
        }
    ]
    assert pod["metadata"]["labels"]["selflengthen.io/run-id"] == "demo"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"


def test_the_configmap_carries_the_whole_config_and_belongs_to_the_job():
    config = cluster_config()
    created = with_conditions(trainjob(config))
    config_map = to_manifest(build_config_map(config, created))
    assert parse_config(json.loads(config_map["data"]["config.json"])) == config
    assert config_map["metadata"]["name"] == f"{NAME}-config"
    assert config_map["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "trainer.kubeflow.org/v1alpha1",
            "kind": "TrainJob",
            "name": NAME,
            "uid": "tj-uid",
            "blockOwnerDeletion": False,
        }
    ]


def test_placement_and_cpu_only_jobs():
    config = cluster_config(
        trainjob__gpus_per_node=0,
        trainjob__runtime_kind="ClusterTrainingRuntime",
        trainjob__node_selector={"pool": "train"},
        trainjob__tolerations=[{"key": "dedicated", "operator": "Equal", "value": "train", "effect": "NoSchedule"}],
    )
    job = trainjob(config, adapter_from_uri=None, base_model_uri="Qwen/Qwen2.5-7B-Instruct")
    assert "nvidia.com/gpu" not in job["spec"]["trainer"]["resourcesPerNode"]["requests"]
    assert job["spec"]["trainer"]["numProcPerNode"] == 1
    assert "--adapter-from" not in job["spec"]["trainer"]["command"]
    assert job["spec"]["runtimeRef"]["kind"] == "ClusterTrainingRuntime"
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"][
        "spec"
    ]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "train"}
    assert pod["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "train", "effect": "NoSchedule"}
    ]
    validate_crd_object(job)


@pytest.mark.parametrize("field", ["data_uri", "output_uri", "adapter_from_uri", "base_model_uri"])
def test_paths_local_to_the_pipeline_pod_are_refused(field):
    with pytest.raises(TrainingError, match="s3://"):
        trainjob(**{field: "/work/runs/demo/x"})


def test_the_trainjob_is_valid_under_the_crd_schema():
    config = cluster_config(
        trainjob__tolerations=[{"key": "gpu", "operator": "Exists"}], trainjob__node_selector={"a": "b"}
    )
    job = trainjob(config)
    job["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}]
    validate_crd_object(job)
    assert set(job["spec"]) == set(SPEC_FIELDS)  # what doctor looks for in the installed CRD


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "trainer", "numNodes"), "two", "is not of type 'integer'"),
        (("spec", "trainer", "numNode"), 2, "'numNode' was unexpected"),
        (("spec", "runtimeRef"), {"kind": "TrainingRuntime"}, "'name' is a required property"),
        (("spec", "activeDeadlineSeconds"), 0, "less than the minimum of 1"),
    ],
)
def test_an_invalid_trainjob_fails_the_crd_schema(path, value, message):
    job = trainjob()
    node = job
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(InvalidObject, match=message):
        validate_crd_object(job)


def test_names_stay_short_enough_for_jobset_pods():
    run_id = "a-very-long-run-identifier-that-goes-on-and-on-and-on-until-63"
    job = trainjob(cluster_config(run_id=run_id))
    assert len(job["metadata"]["name"]) <= 40


# --------------------------------------------------------------------------- watching the job


def expect_create(kube: FakeKubeAPI) -> None:
    kube.reply("POST", TRAINJOBS, 201, echo(uid="tj-uid"))
    kube.reply("POST", CONFIGMAPS, 201, echo(uid="cm-uid"))


def test_a_complete_job_is_the_result(kube: FakeKubeAPI, clock):
    config = cluster_config()
    expect_create(kube)
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED))
    kube.reply("GET", PODS, 200, pods(running()))
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED, COMPLETE))

    result = run_trainjob(config, 2, request(), api_client=kube.api_client, poll_interval_s=30)

    assert result["status"]["conditions"][-1]["type"] == "Complete"
    assert kube.requests[0].body == trainjob(config)
    config_map = kube.requests[1].body
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == "tj-uid"
    assert json.loads(config_map["data"]["config.json"])["run_id"] == "demo"
    assert clock.now == 30


def test_a_failed_job_fails_with_its_own_reason(kube: FakeKubeAPI, clock):
    config = cluster_config()
    expect_create(kube)
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED, FAILED))
    with pytest.raises(TrainingError) as raised:
        run_trainjob(config, 2, request(), api_client=kube.api_client)
    text = str(raised.value)
    assert f"TrainJob {NAMESPACE}/{NAME} failed (JobSetFailed)" in text
    assert 'ReplicatedJob "node" failed: exit code 1' in text
    assert f"kubectl logs -n {NAMESPACE} -l app.kubernetes.io/instance={NAME}" in text


def test_a_retried_step_adopts_the_running_job(kube: FakeKubeAPI, clock):
    config = cluster_config()
    kube.reply(
        "POST", TRAINJOBS, 409, status(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{NAME}" already exists')
    )
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED))
    kube.reply("PATCH", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED))
    kube.reply("POST", CONFIGMAPS, 409, status(409, "AlreadyExists", "already exists"))
    kube.reply("PUT", f"{CONFIGMAPS}/{NAME}-config", 200, echo())
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED, COMPLETE))
    run_trainjob(config, 2, request(), api_client=kube.api_client)
    adoption = kube.requests[2].body["metadata"]
    assert "selflengthen.io/lease-expires" in adoption["annotations"], "the adopted job gets this attempt's lease"


def test_a_retried_step_replaces_a_failed_job(kube: FakeKubeAPI, clock):
    config = cluster_config()
    kube.reply("POST", TRAINJOBS, 409, status(409, "AlreadyExists", "already exists"))
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED, FAILED))
    kube.reply("DELETE", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), FAILED))
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), FAILED))  # still finalising
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 404, status(404, "NotFound", "not found"))
    expect_create(kube)
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), COMPLETE))
    run_trainjob(config, 2, request(), api_client=kube.api_client)
    assert kube.requests[2].query == {"propagationPolicy": "Foreground"}


def test_trainer_pods_that_cannot_start_fail_the_step_at_once_and_free_the_gpus(kube: FakeKubeAPI, clock):
    config = cluster_config()
    expect_create(kube)
    kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED))
    pulling = {"name": "node", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
               "state": {"waiting": {"reason": "InvalidImageName", "message": 'invalid reference format: "ghcr.io/x:"'}}}  # fmt: skip
    kube.reply("GET", PODS, 200, pods(pulling))
    kube.reply("GET", f"/api/v1/namespaces/{NAMESPACE}/events", 200, {"metadata": {}, "items": [
        {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": POD}, "type": "Warning", "reason": "InspectFailed",
         "message": "Failed to apply default image tag", "lastTimestamp": "2026-01-01T00:00:00Z"}]})  # fmt: skip
    kube.reply("GET", f"{PODS}/{POD}/log", 400, status(400, "BadRequest", "container is waiting to start"))
    kube.reply("DELETE", f"{TRAINJOBS}/{NAME}", 200, {})
    with pytest.raises(TrainingError) as raised:
        run_trainjob(config, 2, request(), api_client=kube.api_client, poll_interval_s=30)
    message = str(raised.value)
    assert "cannot start (it was deleted)" in message and "InvalidImageName" in message
    assert "event Warning InspectFailed: Failed to apply default image tag" in message and "no log of container node" in message
    assert kube.requests[3].query == {"labelSelector": f"app.kubernetes.io/instance={NAME}"}
    assert clock.now == 0


def test_a_job_that_does_not_finish_in_time_is_deleted(kube: FakeKubeAPI, clock):
    config = cluster_config(trainjob__timeout_s=60)
    expect_create(kube)
    for _ in range(3):  # t = 0, 30, 60
        kube.reply("GET", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED))
        kube.reply("GET", PODS, 200, pods(running()))
    kube.reply("DELETE", f"{TRAINJOBS}/{NAME}", 200, with_conditions(trainjob(config), CREATED))
    with pytest.raises(TrainingError, match=r"did not finish within 60 s \(trainjob.timeout_s\); it was deleted"):
        run_trainjob(config, 2, request(), api_client=kube.api_client, poll_interval_s=30)


@pytest.mark.parametrize(
    ("code", "reason", "message", "expected"),
    [
        (403, "Forbidden", 'cannot create resource "trainjobs" in API group "trainer.kubeflow.org"', "RBAC"),
        (404, "NotFound", "the server could not find the requested resource", "Kubeflow Trainer's CRDs"),
    ],
)
def test_api_refusals_are_clear(kube: FakeKubeAPI, code, reason, message, expected):
    kube.reply("POST", TRAINJOBS, code, status(code, reason, message))
    with pytest.raises(TrainingError) as raised:
        run_trainjob(cluster_config(), 2, request(), api_client=kube.api_client)
    assert f"creating TrainJob {NAMESPACE}/{NAME}: HTTP {code}" in str(raised.value)
    assert expected in str(raised.value) and message in str(raised.value)


def test_the_trainjob_is_owned_by_the_runs_workflow_with_its_lease_and_labels():
    workflow = k8s.V1OwnerReference(
        api_version="argoproj.io/v1alpha1", kind="Workflow", name="wf-1", uid="wf-uid", controller=False, block_owner_deletion=False
    )
    config = cluster_config()
    metadata = build_trainjob(config, 2, request(), owner=RunOwner(workflow))["metadata"]
    assert metadata["ownerReferences"] == [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "wf-1", "uid": "wf-uid", "controller": False, "blockOwnerDeletion": False}
    ]
    assert metadata["annotations"] == {
        "selflengthen.io/workflow": "wf-1",
        "selflengthen.io/workflow-uid": "wf-uid",
        "selflengthen.io/lease-expires": lease_expiry(config.execution.lease_s, WALL_CLOCK),
    }
    assert metadata["labels"]["selflengthen.io/run-id"] == "demo" and metadata["labels"]["app.kubernetes.io/managed-by"] == "selflengthen"
