"""The model servers of one phase in the graph, as ``serving.layout`` says.

A phase's generation steps ask :class:`PhaseServers` for the endpoint of a role (``generator``,
``extender``, or ``base``: the model of ``self_instruct.model`` base); the server serving it is
started when first asked for and torn down once every step using it is done:

* ``shared``: one server for every role (the base model, the roles as its LoRA adapters or under
  their names while they are the base), started once, torn down after the phase's last user.
* ``sequential``: one role's server at a time; a server is started only after the previous one is
  torn down, so the roles must be asked for in the order they run.
* ``per_role``: a server per role, all started at the phase's start (the serve steps depend on
  nothing), each torn down after its own users.
"""

from __future__ import annotations

from typing import Any

from kfp.dsl import PipelineTask

from pipelines.tasks import Tasks

MODEL_ROLES = ("base", "generator", "extender")


class PhaseServers:
    """Serve and teardown tasks of one phase. ``models``: the roles' model URIs (task outputs or
    parameters), ``base`` among them; only the roles given can be asked for."""

    def __init__(self, tasks: Tasks, phase: str, models: dict[str, Any]):
        self.tasks = tasks
        self.phase = phase
        self.models = models
        self.layout = tasks.config.serving.layout
        self.serving: dict[str, PipelineTask] = {}  # server -> its serve task, while up
        self.users: dict[str, list[PipelineTask]] = {}
        self.stopped: list[PipelineTask] = []

    def server_of(self, role: str) -> str:
        return "shared" if self.layout == "shared" else role

    def endpoint(self, role: str) -> Any:
        """The record of the server answering for ``role`` (started now if it is not up)."""
        server = self.server_of(role)
        if server not in self.serving:
            earlier = self.stop_all() if self.layout == "sequential" else []
            served = {name: self.models.get(name, "") for name in MODEL_ROLES}
            if server != "shared":  # a role's server loads its own model; base tells it whether that is the base
                served = {name: uri if name in (role, "base") else "" for name, uri in served.items()}
            self.serving[server] = self.tasks.serve(self.phase, server, served).after(*earlier)
            self.users[server] = []
        return self.serving[server].outputs["record"]

    def use(self, role: str, task: PipelineTask) -> PipelineTask:
        """Record that ``task`` uses the server of ``role`` (its teardown waits for it)."""
        self.users[self.server_of(role)].append(task)
        return task

    def generation(self, role: str, component: Any, **arguments: Any) -> PipelineTask:
        """A generation step of ``component`` against the server of ``role``."""
        return self.use(role, self.tasks.generation(component, endpoint=self.endpoint(role), **arguments))

    def stop_all(self) -> list[PipelineTask]:
        """Tear down every server that is up, each after its users; the teardown tasks."""
        stopped = [self.tasks.teardown(self.phase, server, self.users.pop(server)) for server in self.serving]
        self.serving.clear()
        self.stopped += stopped
        return stopped
