"""`selflengthen gc`: exactly the servers and TrainJobs of ended, deleted, terminated or lease-expired
runs are deleted; objects of running runs and objects without our labels are kept."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.cluster.janitor import SELECTOR, JanitorError, collect_garbage
from selflengthen.cluster.ownership import lease_expiry
from tests.cluster.conftest import NAMESPACE
from tests.cluster.fake_kube import FakeKubeAPI, status

NOW = 1_800_000_000.0
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
TRAINJOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
WORKFLOWS = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows"
FRESH, EXPIRED = lease_expiry(600, NOW), lease_expiry(-60, NOW)


def obj(name: str, run: str | None, *, workflow: str | None = None, uid: str = "", lease: str | None = None, by_annotation: bool = False) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "selflengthen", "selflengthen.io/run-id": run} if run else {"app": "other"}
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "labels": labels, "annotations": {}}
    if workflow and by_annotation:
        metadata["annotations"] |= {"selflengthen.io/workflow": workflow, "selflengthen.io/workflow-uid": uid}
    elif workflow:
        metadata["ownerReferences"] = [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": workflow, "uid": uid}]
    if lease:
        metadata["annotations"]["selflengthen.io/lease-expires"] = lease
    return {"metadata": metadata}


def listing(*items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {}, "items": list(items)}


def workflow(name: str, uid: str, phase: str = "Running", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": name, "uid": uid, "labels": {}}, "spec": spec, "status": {"phase": phase}}


def script(kube: FakeKubeAPI, *, deletes: bool) -> None:
    kube.reply("GET", DEPLOYMENTS, 200, listing(
        obj("sl-ended-gen-it1", "ended", workflow="wf-ended", uid="u1"),
        obj("sl-live-gen-it1", "live", workflow="wf-live", uid="u2", lease=FRESH),
        obj("sl-hung-gen-it1", "hung", workflow="wf-live", uid="u2", lease=EXPIRED),
        obj("sl-stopped-gen-it1", "stopped", workflow="wf-stopped", uid="u3", lease=FRESH),
    ))  # fmt: skip
    kube.reply("GET", f"{WORKFLOWS}/wf-ended", 200, workflow("wf-ended", "u1", "Succeeded"))
    if deletes:
        kube.reply("DELETE", f"{DEPLOYMENTS}/sl-ended-gen-it1", 200, {})
    kube.reply("GET", f"{WORKFLOWS}/wf-live", 200, workflow("wf-live", "u2"))
    if deletes:
        kube.reply("DELETE", f"{DEPLOYMENTS}/sl-hung-gen-it1", 200, {})
    kube.reply("GET", f"{WORKFLOWS}/wf-stopped", 200, workflow("wf-stopped", "u3", activeDeadlineSeconds=0))  # KFP terminate
    if deletes:
        kube.reply("DELETE", f"{DEPLOYMENTS}/sl-stopped-gen-it1", 200, {})
    kube.reply("GET", SERVICES, 200, listing(
        obj("sl-ended-gen-it1", "ended", workflow="wf-ended", uid="u1"),
        obj("sl-gone-gen-it1", "gone", workflow="wf-gone", uid="u4", by_annotation=True),
        obj("sl-reused-gen-it1", "reused", workflow="wf-reused", uid="old", lease=FRESH),
        obj("foreign", None),
    ))  # fmt: skip
    if deletes:
        kube.reply("DELETE", f"{SERVICES}/sl-ended-gen-it1", 200, {})
    kube.reply("GET", f"{WORKFLOWS}/wf-gone", 404, status(404, "NotFound", 'workflows.argoproj.io "wf-gone" not found'))
    if deletes:
        kube.reply("DELETE", f"{SERVICES}/sl-gone-gen-it1", 200, {})
    kube.reply("GET", f"{WORKFLOWS}/wf-reused", 200, workflow("wf-reused", "new"))
    if deletes:
        kube.reply("DELETE", f"{SERVICES}/sl-reused-gen-it1", 200, {})
    kube.reply("GET", TRAINJOBS, 200, listing(
        obj("sl-live-ext-it1", "live", workflow="wf-live", uid="u2"),
        obj("sl-orphan-ext-it1", "orphan"),
    ))  # fmt: skip


def test_gc_deletes_exactly_the_objects_of_runs_that_are_over() -> None:
    kube = FakeKubeAPI()
    script(kube, deletes=True)
    decisions = collect_garbage(NAMESPACE, api_client=kube.api_client, now=NOW)
    kube.assert_done()
    deleted = {(d.kind, d.name) for d in decisions if d.delete}
    assert deleted == {
        ("Deployment", "sl-ended-gen-it1"), ("Deployment", "sl-hung-gen-it1"), ("Deployment", "sl-stopped-gen-it1"),
        ("Service", "sl-ended-gen-it1"), ("Service", "sl-gone-gen-it1"), ("Service", "sl-reused-gen-it1"),
    }  # fmt: skip
    kept = {d.name: d.reason for d in decisions if not d.delete}
    assert set(kept) == {"sl-live-gen-it1", "foreign", "sl-live-ext-it1", "sl-orphan-ext-it1"}
    assert "not created by a selflengthen step" in kept["foreign"]
    assert "no Workflow and no lease" in kept["sl-orphan-ext-it1"]
    reasons = {d.name: d.reason for d in decisions if d.delete}
    assert "ended (Succeeded)" in reasons["sl-ended-gen-it1"] and "terminated" in reasons["sl-stopped-gen-it1"]
    assert "lease expired" in reasons["sl-hung-gen-it1"] and "gone" in reasons["sl-gone-gen-it1"]
    assert "another run's" in reasons["sl-reused-gen-it1"]
    lists = [r for r in kube.requests if r.method == "GET" and not r.path.startswith(WORKFLOWS)]
    assert {r.query["labelSelector"] for r in lists} == {SELECTOR}
    trainjob_deletes = [r for r in kube.requests if r.method == "DELETE" and r.path.startswith(TRAINJOBS)]
    assert trainjob_deletes == []


def test_a_dry_run_deletes_nothing_and_the_cli_prints_each_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = FakeKubeAPI()
    script(kube, deletes=False)
    from selflengthen.cluster import janitor

    monkeypatch.setattr(janitor, "kube_api_client", lambda error_type: kube.api_client)
    monkeypatch.setattr(janitor.time, "time", lambda: NOW)
    result = CliRunner().invoke(app, ["gc", "--namespace", NAMESPACE, "--dry-run"])
    assert result.exit_code == 0, result.output
    kube.assert_done()
    assert "would delete Deployment/sl-hung-gen-it1 (run hung): its lease expired" in result.output
    assert "kept Deployment/sl-live-gen-it1 (run live): its run is alive" in result.output
    assert "6 of 10 object(s) to delete in namespace ns1" in result.output


def test_an_api_refusal_fails_gc_naming_what_it_tried() -> None:
    kube = FakeKubeAPI()
    kube.reply("GET", DEPLOYMENTS, 403, status(403, "Forbidden", "deployments.apps is forbidden"))
    with pytest.raises(JanitorError, match=r"listing Deployments .* HTTP 403"):
        collect_garbage(NAMESPACE, api_client=kube.api_client, now=NOW)


def test_without_kubeflow_trainer_trainjobs_are_skipped_with_a_warning_and_the_rest_collected(caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKubeAPI()
    kube.reply("GET", DEPLOYMENTS, 200, listing(obj("sl-ended-gen-it1", "ended", workflow="wf-ended", uid="u1")))
    kube.reply("GET", f"{WORKFLOWS}/wf-ended", 200, workflow("wf-ended", "u1", "Succeeded"))
    kube.reply("DELETE", f"{DEPLOYMENTS}/sl-ended-gen-it1", 200, {})
    kube.reply("GET", SERVICES, 200, listing())
    kube.reply("GET", TRAINJOBS, 404, status(404, "NotFound", "the server could not find the requested resource"))
    with caplog.at_level("WARNING", logger="selflengthen.cluster.janitor"):
        decisions = collect_garbage(NAMESPACE, api_client=kube.api_client, now=NOW)
    kube.assert_done()
    assert [(d.kind, d.name, d.delete) for d in decisions] == [("Deployment", "sl-ended-gen-it1", True)]
    assert "skipping TrainJobs: the cluster serves no trainer.kubeflow.org/v1alpha1 trainjobs (Kubeflow Trainer is not installed)" in caplog.text


def test_any_other_trainjob_listing_error_still_fails_gc() -> None:
    kube = FakeKubeAPI()
    kube.reply("GET", DEPLOYMENTS, 200, listing())
    kube.reply("GET", SERVICES, 200, listing())
    kube.reply("GET", TRAINJOBS, 403, status(403, "Forbidden", "trainjobs.trainer.kubeflow.org is forbidden"))
    with pytest.raises(JanitorError, match=r"listing TrainJobs .* HTTP 403"):
        collect_garbage(NAMESPACE, api_client=kube.api_client, now=NOW)
