"""Who owns what a step creates, and how long it may live without a step renewing it.

Every model server and TrainJob a step creates carries

* an owner reference to the run's Argo **Workflow** (``argoproj.io/v1alpha1``), so deleting the run
  (KFP's DeleteRun deletes the Workflow) or the Workflow's TTL after it ends garbage-collects it.
  Not the step pod: a serve step's pod completes once its server is ready, and with a ``podGC``
  setting it would take the server with it; a retry makes a new pod.
* annotations naming that Workflow and its uid (what ``selflengthen gc`` looks up), and
  ``selflengthen.io/lease-expires``: the time after which the janitor deletes the object even while
  its run seems alive (a step that uses the object renews it).

How the step learns the Workflow: the downward API cannot expose a pod's ownerReferences
(https://kubernetes.io/docs/concepts/workloads/pods/downward-api/), so the pipeline injects the
step pod's own name, uid and namespace (kfp-kubernetes ``use_field_path_as_env``: POD_NAME,
POD_UID, POD_NAMESPACE) and the step reads its pod: Argo creates every step pod with a controller
reference to its Workflow (argo-workflows v4.0.5, workflow/controller/workflowpod.go). The uid is
never guessed: a wrong uid makes the garbage collector delete the dependent at once, and so would a
reference across namespaces (https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/).
``controller`` and ``blockOwnerDeletion`` are false: setting blockOwnerDeletion needs delete
permission on the Workflow (422 otherwise), which the runner's Role does not hold.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from selflengthen.config import RunConfig
from selflengthen.errors import SelfLengthenError

log = logging.getLogger(__name__)

ANNOTATION_WORKFLOW = "selflengthen.io/workflow"
ANNOTATION_WORKFLOW_UID = "selflengthen.io/workflow-uid"
ANNOTATION_LEASE = "selflengthen.io/lease-expires"
WORKFLOW_GROUP = "argoproj.io"
WORKFLOW_KIND = "Workflow"
# The step pod's own coordinates, injected by the pipeline (env name -> downward-API field path).
POD_FIELDS = {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}


def lease_expiry(lease_s: float, now: float | None = None) -> str:
    """RFC 3339 UTC time ``lease_s`` seconds from ``now`` (default: the current time)."""
    moment = datetime.fromtimestamp((time.time() if now is None else now) + lease_s, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(value: str) -> float:
    """The epoch seconds of an RFC 3339 UTC time written by :func:`lease_expiry`."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class RunOwner:
    """The run's Workflow as an owner reference, or nothing when the step is not in an Argo pod."""

    workflow: k8s.V1OwnerReference | None = None

    def annotations(self, config: RunConfig, now: float | None = None) -> dict[str, str]:
        annotations = {ANNOTATION_LEASE: lease_expiry(config.execution.lease_s, now)}
        if self.workflow is not None:
            annotations[ANNOTATION_WORKFLOW] = self.workflow.name
            annotations[ANNOTATION_WORKFLOW_UID] = self.workflow.uid
        return annotations

    def metadata(self, config: RunConfig, now: float | None = None) -> k8s.V1ObjectMeta:
        """What an object's metadata gets: the owner reference, the Workflow and the lease."""
        return k8s.V1ObjectMeta(
            owner_references=[self.workflow] if self.workflow is not None else None,
            annotations=self.annotations(config, now),
        )

    def adoption(self, config: RunConfig) -> dict[str, Any]:
        """A merge patch making an object of an earlier attempt or run this run's (owner, lease)."""
        from selflengthen.cluster.objects import to_manifest

        return {"metadata": to_manifest(self.metadata(config))}


NO_OWNER = RunOwner()


def run_owner(core: k8s.CoreV1Api, namespace: str, environ: Mapping[str, str] = os.environ) -> RunOwner:
    """The Workflow owning this step's pod, read from the pod itself; NO_OWNER when unknown.

    Unknown: no pod coordinates in the environment (not a pipeline pod, or a local run), a pod in
    another namespace than the objects, a pod whose uid is not the injected one, a pod no Workflow
    owns, or a pod the API does not show (then the lease and the janitor still apply).
    """
    name, uid, pod_namespace = (environ.get(key) for key in POD_FIELDS)
    if not name or not uid:
        log.info("the step's pod is unknown (no POD_NAME/POD_UID): objects get no owner reference")
        return NO_OWNER
    if (pod_namespace or namespace) != namespace:
        log.info("the step runs in namespace %s, its objects in %s: no owner reference across namespaces", pod_namespace, namespace)
        return NO_OWNER
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except (ApiException, HTTPError) as error:
        log.warning("could not read the step's pod %s/%s (%s): objects get no owner reference", namespace, name, error)
        return NO_OWNER
    if pod.metadata.uid != uid:
        log.warning("pod %s/%s has uid %s, not %s: objects get no owner reference", namespace, name, pod.metadata.uid, uid)
        return NO_OWNER
    for reference in pod.metadata.owner_references or []:
        if reference.kind == WORKFLOW_KIND and reference.api_version.split("/")[0] == WORKFLOW_GROUP:
            workflow = k8s.V1OwnerReference(
                api_version=reference.api_version,
                kind=WORKFLOW_KIND,
                name=reference.name,
                uid=reference.uid,
                controller=False,
                block_owner_deletion=False,
            )
            return RunOwner(workflow)
    log.info("pod %s/%s is not owned by an Argo Workflow: objects get no owner reference", namespace, name)
    return NO_OWNER


def lease_patch(config: RunConfig, now: float | None = None) -> dict[str, Any]:
    """A merge patch moving an object's lease to ``execution.lease_s`` from now."""
    return {"metadata": {"annotations": {ANNOTATION_LEASE: lease_expiry(config.execution.lease_s, now)}}}


@contextmanager
def lease_kept(renew: Callable[[], None], interval_s: float, what: str, *, renew_now: bool = True) -> Iterator[None]:
    """Call ``renew`` now (unless not ``renew_now``: the lease was just set) and every ``interval_s``
    seconds (in a thread) until the block ends.

    A failed renewal is logged, not raised: the step's work goes on, and the lease still holds
    for the rest of its time (renewals come at a quarter of it)."""

    def attempt() -> None:
        try:
            renew()
        except (ApiException, HTTPError, SelfLengthenError) as error:
            log.warning("could not renew the lease of %s: %s", what, error)

    if renew_now:
        attempt()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            attempt()

    thread = threading.Thread(target=loop, name=f"lease {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
