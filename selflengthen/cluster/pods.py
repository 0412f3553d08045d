"""Pods that will not start: tell them early, and say why with their events and last log lines.

The serve and train steps poll their pods (by ``app.kubernetes.io/instance``) while they wait and
stop as soon as a pod is in a state waiting cannot mend:

* at once: ``InvalidImageName``, ``ErrImageNeverPull`` (kubelet, pkg/kubelet/images/types.go);
* a crash loop (``CrashLoopBackOff``) once the container restarted ``execution.crash_restarts``
  times;
* after ``execution.start_grace_s``: states that are usually fatal but can pass: an image pull
  error or back-off (a registry's rate limit or outage), a container config or create error (a
  Secret that appears later), an unschedulable pod (the cluster autoscaler may add a node;
  ``PodScheduled`` False with reason ``Unschedulable``, the scheduler's "right now").

The error names the pod, the container, the reason and the kubelet's message, then the pod's
last events (``involvedObject`` field selector) and the container's last log lines (the previous
run's in a crash loop; a container that never ran has none, which the API answers with 400).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from selflengthen.cluster.objects import LABEL_INSTANCE
from selflengthen.config import ExecutionConfig

FATAL_AT_ONCE = {"InvalidImageName", "ErrImageNeverPull"}
FATAL_AFTER_GRACE = {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError", "Unschedulable"}
CRASH_LOOP = "CrashLoopBackOff"
STARTING = {"ContainerCreating", "PodInitializing"}
EVENTS_SHOWN = 8
LOG_LINES = 30


@dataclass(frozen=True)
class PodProblem:
    """Why one pod (or one of its containers) is not running."""

    pod: str
    container: str | None
    reason: str
    message: str
    restarts: int = 0

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.pod, self.container, self.reason)

    def describe(self) -> str:
        where = f"pod {self.pod}" + (f" container {self.container}" if self.container else "")
        return f"{where}: {self.reason}" + (f": {self.message}" if self.message else "")


def pod_problems(core: k8s.CoreV1Api, namespace: str, instance: str) -> list[PodProblem]:
    """The problems of the pods labelled ``app.kubernetes.io/instance=<instance>``."""
    problems = []
    for pod in core.list_namespaced_pod(namespace, label_selector=f"{LABEL_INSTANCE}={instance}").items:
        status = pod.status or k8s.V1PodStatus()
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                problems.append(PodProblem(pod.metadata.name, None, "Unschedulable", condition.message or ""))
        for container in (status.init_container_statuses or []) + (status.container_statuses or []):
            waiting = container.state and container.state.waiting
            if not waiting or not waiting.reason or waiting.reason in STARTING:
                continue
            message = waiting.message or ""
            last = container.last_state and container.last_state.terminated
            if last:
                message += f" (last exit code {last.exit_code}{': ' + last.message.strip()[-500:] if last.message else ''})"
            problems.append(PodProblem(pod.metadata.name, container.name, waiting.reason, message.strip(), container.restart_count or 0))
    return problems


class FailFast:
    """Decides, poll after poll, when a pod's problem ends the wait; remembers since when each
    possibly-passing problem has lasted."""

    def __init__(self, execution: ExecutionConfig):
        self.grace_s = execution.start_grace_s
        self.crash_restarts = execution.crash_restarts
        self.first_seen: dict[tuple[str, str | None, str], float] = {}

    def fatal(self, problems: list[PodProblem]) -> PodProblem | None:
        """The first problem that ends the wait now, or None."""
        now = time.monotonic()
        current = {problem.key for problem in problems}
        self.first_seen = {key: seen for key, seen in self.first_seen.items() if key in current}
        for problem in problems:
            since = self.first_seen.setdefault(problem.key, now)
            if problem.reason in FATAL_AT_ONCE:
                return problem
            if problem.reason == CRASH_LOOP and problem.restarts >= self.crash_restarts:
                return problem
            if problem.reason in FATAL_AFTER_GRACE and now - since >= self.grace_s:
                return problem
        return None

    def check(self, core: k8s.CoreV1Api, namespace: str, instance: str) -> str | None:
        """None while the pods may still start; else the diagnosis of the one that will not."""
        problem = self.fatal(pod_problems(core, namespace, instance))
        if problem is None:
            return None
        lasted = time.monotonic() - self.first_seen[problem.key]
        return problem.describe() + (f" (for {lasted:.0f} s)" if lasted else "") + diagnosis(core, namespace, problem)


def _event_time(event: Any) -> float:
    moment = event.last_timestamp or event.event_time or event.first_timestamp
    return moment.timestamp() if moment else 0.0


def diagnosis(core: k8s.CoreV1Api, namespace: str, problem: PodProblem) -> str:
    """The pod's last events and the container's last log lines, as lines for an error message."""
    lines = []
    try:
        events = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={problem.pod}"
        ).items
        for event in sorted(events, key=_event_time)[-EVENTS_SHOWN:]:
            count = f" (x{event.count})" if event.count and event.count > 1 else ""
            lines.append(f"  event {event.type} {event.reason}{count}: {event.message}")
    except (ApiException, HTTPError) as error:
        lines.append(f"  events unknown: {error}")
    if problem.container:
        try:
            log = core.read_namespaced_pod_log(
                problem.pod, namespace, container=problem.container, tail_lines=LOG_LINES, previous=problem.reason == CRASH_LOOP
            )
            lines += [f"  log: {line}" for line in (log or "").splitlines()[-LOG_LINES:]] or ["  log: (empty)"]
        except (ApiException, HTTPError) as error:
            reason = getattr(error, "reason", None) or error
            lines.append(f"  no log of container {problem.container}: {reason}")
    return ("\n" + "\n".join(lines)) if lines else ""
