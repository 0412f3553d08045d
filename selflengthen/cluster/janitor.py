"""``selflengthen gc``: delete the model servers and TrainJobs whose run is over, without a pipeline.

The third net under a run's clean-up (the first two: owner references to the run's Workflow, and
the exit handler). It needs no running pipeline and no KFP API, only the Kubernetes API of its
namespace: it reads the objects the steps created and the Argo Workflows that own them.

What it considers: Deployments, Services and TrainJobs labelled ``app.kubernetes.io/managed-by=
selflengthen`` that carry ``selflengthen.io/run-id``; nothing else is ever touched. Each is deleted
when

* its run's Workflow (owner reference, else the annotations ``selflengthen.io/workflow`` and
  ``workflow-uid``) is gone (404: the run was deleted) or is another object of the same name (uid);
* the Workflow ended: phase Succeeded, Failed or Error, or label ``workflows.argoproj.io/completed``
  "true" (argo-workflows v4.0.5, pkg/apis/workflow/v1alpha1/workflow_phase.go, workflow/common/common.go);
* the run was terminated: KFP's TerminateRun patches ``spec.activeDeadlineSeconds: 0`` into the
  Workflow (kubeflow/pipelines 2.17.0, backend/src/common/util/execution_spec.go GetTerminatePatch),
  ``argo stop``/``terminate`` set ``spec.shutdown``;
* its lease (annotation ``selflengthen.io/lease-expires``) has expired, even while the Workflow
  runs (a hung or killed step stops renewing it).

An object with neither a Workflow nor a lease is kept, and said so. A cluster without Kubeflow
Trainer (``execution.training: inline``) serves no TrainJob API: the list answers 404, and
TrainJobs are skipped with a warning. Whether a terminated run's exit
handler runs is not relied on here: by Argo's source it should (exit-handler pods ignore the
deadline, workflow/controller/workflowpod.go), which is unconfirmed on a live cluster.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from selflengthen.cluster.objects import LABEL_RUN, PART_OF, api_errors, delete_if_present, kube_api_client, to_manifest
from selflengthen.cluster.ownership import ANNOTATION_LEASE, ANNOTATION_WORKFLOW, ANNOTATION_WORKFLOW_UID, WORKFLOW_KIND, parse_expiry
from selflengthen.cluster.trainjob import GROUP, PLURAL, VERSION
from selflengthen.errors import SelfLengthenError

SELECTOR = f"app.kubernetes.io/managed-by={PART_OF},{LABEL_RUN}"
WORKFLOW_API = ("argoproj.io", "v1alpha1", "workflows")
ENDED_PHASES = {"Succeeded", "Failed", "Error"}
COMPLETED_LABEL = "workflows.argoproj.io/completed"

log = logging.getLogger(__name__)


class JanitorError(SelfLengthenError):
    """The janitor could not read or delete what it has to."""


@dataclass(frozen=True)
class Decision:
    """What the janitor does with one object, and why."""

    kind: str
    name: str
    run_id: str
    delete: bool
    reason: str

    def line(self, dry_run: bool) -> str:
        verb = ("would delete" if dry_run else "deleted") if self.delete else "kept"
        return f"{verb} {self.kind}/{self.name} (run {self.run_id}): {self.reason}"


def _workflow_state(custom: k8s.CustomObjectsApi, namespace: str, name: str, uid: str | None) -> str | None:
    """Why the run of Workflow ``name`` is over, or None while it runs."""
    try:
        workflow = custom.get_namespaced_custom_object(*WORKFLOW_API[:2], namespace, WORKFLOW_API[2], name)
    except ApiException as error:
        if error.status == 404:
            return f"its Workflow {name} is gone (the run was deleted)"
        raise
    metadata, spec, status = workflow.get("metadata") or {}, workflow.get("spec") or {}, workflow.get("status") or {}
    if uid and metadata.get("uid") != uid:
        return f"Workflow {name} is another run's now (uid {metadata.get('uid')}, not {uid})"
    if status.get("phase") in ENDED_PHASES or (metadata.get("labels") or {}).get(COMPLETED_LABEL) == "true":
        return f"its Workflow {name} ended ({status.get('phase') or 'completed'})"
    if spec.get("activeDeadlineSeconds") == 0 or spec.get("shutdown"):
        return f"its Workflow {name} was terminated"
    return None


def decide(obj: dict[str, Any], kind: str, workflow_state: Callable[[str, str | None], str | None], now: float) -> Decision:
    """The decision for one object (its manifest as a dict)."""
    metadata = obj.get("metadata") or {}
    labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
    name, run_id = metadata.get("name", "?"), labels.get(LABEL_RUN)
    if labels.get("app.kubernetes.io/managed-by") != PART_OF or not run_id:
        return Decision(kind, name, run_id or "?", False, "not created by a selflengthen step")
    owners = [ref for ref in metadata.get("ownerReferences") or [] if ref.get("kind") == WORKFLOW_KIND]
    workflow = owners[0]["name"] if owners else annotations.get(ANNOTATION_WORKFLOW)
    uid = owners[0].get("uid") if owners else annotations.get(ANNOTATION_WORKFLOW_UID)
    if workflow:
        ended = workflow_state(workflow, uid)
        if ended:
            return Decision(kind, name, run_id, True, ended)
    lease = annotations.get(ANNOTATION_LEASE)
    if lease:
        try:
            expiry = parse_expiry(lease)
        except ValueError:
            return Decision(kind, name, run_id, False, f"unreadable lease {lease!r}")
        if now > expiry:
            return Decision(kind, name, run_id, True, f"its lease expired at {lease}")
        return Decision(kind, name, run_id, False, f"its run is alive (lease until {lease})")
    if workflow:
        return Decision(kind, name, run_id, False, f"its Workflow {workflow} runs")
    return Decision(kind, name, run_id, False, "no Workflow and no lease tell whether its run is alive")


def collect_garbage(
    namespace: str, *, dry_run: bool = False, api_client: k8s.ApiClient | None = None, now: float | None = None
) -> list[Decision]:
    """Decide for every selflengthen object in ``namespace`` and delete those whose run is over
    (none with ``dry_run``); one decision per object."""
    api = api_client or kube_api_client(JanitorError)
    apps, core, custom = k8s.AppsV1Api(api), k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    now = time.time() if now is None else now
    states: dict[tuple[str, str | None], str | None] = {}

    def workflow_state(name: str, uid: str | None) -> str | None:
        if (name, uid) not in states:
            with api_errors(JanitorError, f"reading Workflow {namespace}/{name}"):
                states[name, uid] = _workflow_state(custom, namespace, name, uid)
        return states[name, uid]

    def list_trainjobs() -> list[Any]:
        try:
            return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=SELECTOR)["items"]
        except ApiException as error:
            if error.status != 404:
                raise
        # the API server does not serve the resource: Kubeflow Trainer is not installed (a cluster
        # that trains inline), so there is no TrainJob to collect
        log.warning("skipping TrainJobs: the cluster serves no %s/%s %s (Kubeflow Trainer is not installed)", GROUP, VERSION, PLURAL)
        return []

    def delete_trainjob(name: str, namespace: str, **options: Any) -> None:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, **options)

    kinds: list[tuple[str, Callable[[], list[Any]], Callable[..., Any], str]] = [
        ("Deployment", lambda: to_manifest(apps.list_namespaced_deployment(namespace, label_selector=SELECTOR))["items"],
         apps.delete_namespaced_deployment, "Background"),
        ("Service", lambda: to_manifest(core.list_namespaced_service(namespace, label_selector=SELECTOR))["items"],
         core.delete_namespaced_service, "Background"),
        ("TrainJob", list_trainjobs, delete_trainjob, "Foreground"),
    ]  # fmt: skip
    decisions = []
    for kind, list_objects, delete, propagation in kinds:
        with api_errors(JanitorError, f"listing {kind}s ({SELECTOR}) in namespace {namespace}"):
            objects = list_objects()
        for obj in objects:
            decision = decide(obj, kind, workflow_state, now)
            if decision.delete and not dry_run:
                with api_errors(JanitorError, f"deleting {kind} {namespace}/{decision.name}"):
                    delete_if_present(delete, decision.name, namespace, propagation=propagation)
            decisions.append(decision)
    return decisions
