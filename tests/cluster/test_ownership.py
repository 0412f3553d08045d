"""The run's owner, read from the step's own pod, and the leases steps keep on what they use."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client as k8s

from selflengthen.cluster.ownership import NO_OWNER, lease_kept, parse_expiry, run_owner
from selflengthen.serving.cluster import renew_server_lease
from tests.cluster.conftest import NAMESPACE, cluster_config
from tests.cluster.fake_kube import FakeKubeAPI, status

POD = f"/api/v1/namespaces/{NAMESPACE}/pods/selflengthen-x7k2p-system-container-impl-42"
ENV = {"POD_NAME": "selflengthen-x7k2p-system-container-impl-42", "POD_UID": "pod-uid", "POD_NAMESPACE": NAMESPACE}
WORKFLOW = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "selflengthen-x7k2p", "uid": "wf-uid", "controller": True, "blockOwnerDeletion": True}


def pod(uid: str = "pod-uid", owners: list | None = None) -> dict:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": ENV["POD_NAME"], "namespace": NAMESPACE, "uid": uid, "ownerReferences": owners if owners is not None else [WORKFLOW]}}


def owner_of(kube: FakeKubeAPI, environ: dict) -> object:
    return run_owner(k8s.CoreV1Api(kube.api_client), NAMESPACE, environ)


def test_the_owner_is_the_workflow_of_the_step_pod_never_blocking_its_deletion() -> None:
    kube = FakeKubeAPI().reply("GET", POD, 200, pod())
    owner = owner_of(kube, ENV)
    kube.assert_done()
    reference = owner.workflow
    assert (reference.api_version, reference.kind, reference.name, reference.uid) == ("argoproj.io/v1alpha1", "Workflow", "selflengthen-x7k2p", "wf-uid")
    assert reference.controller is False and reference.block_owner_deletion is False
    annotations = owner.annotations(cluster_config())
    assert annotations["selflengthen.io/workflow"] == "selflengthen-x7k2p" and annotations["selflengthen.io/workflow-uid"] == "wf-uid"


@pytest.mark.parametrize(
    ("environ", "answer"),
    [
        ({}, None),  # not a pipeline pod: nothing asked
        ({**ENV, "POD_NAMESPACE": "kubeflow-user"}, None),  # no owner references across namespaces
        (ENV, (200, pod(owners=[]))),  # a pod no Workflow owns
        (ENV, (200, pod(uid="another-pod"))),  # the name now belongs to another pod
        (ENV, (403, status(403, "Forbidden", "pods is forbidden"))),  # the pod cannot be read
    ],
    ids=["no-pod", "other-namespace", "no-workflow", "uid-mismatch", "forbidden"],
)
def test_without_a_sure_workflow_there_is_no_owner(environ, answer) -> None:
    kube = FakeKubeAPI()
    if answer:
        kube.reply("GET", POD, *answer)
    assert owner_of(kube, environ) == NO_OWNER
    kube.assert_done()


def test_a_step_renews_its_servers_lease_and_stops_when_done() -> None:
    kube = FakeKubeAPI()
    for path in ("/apis/apps/v1/namespaces/ns1/deployments/sl-demo-generator-it1", "/api/v1/namespaces/ns1/services/sl-demo-generator-it1"):
        kube.reply("PATCH", path, 200, {"metadata": {"name": "sl-demo-generator-it1"}})
    config = cluster_config()
    renew_server_lease(config, "generator", 1, api_client=kube.api_client)
    kube.assert_done()
    leases = {parse_expiry(request.body["metadata"]["annotations"]["selflengthen.io/lease-expires"]) for request in kube.requests}
    assert len(leases) == 1


def test_a_lease_is_renewed_until_the_block_ends_and_failures_do_not_stop_the_step() -> None:
    calls = []
    renewed = threading.Event()

    def renew() -> None:
        calls.append(1)
        if len(calls) >= 3:
            renewed.set()
        raise k8s.ApiException(status=503, reason="unavailable")

    with lease_kept(renew, 0.01, "a server"):
        assert renewed.wait(5)
    count = len(calls)
    assert count >= 3
    time.sleep(0.05)
    assert len(calls) == count, "no renewal after the block"
