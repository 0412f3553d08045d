"""One macro-iteration as a sub-pipeline.

Model servers as ``serving.layout`` says (pipelines/servers.py) -> held-out answers (and an
evaluation) of the Generator as it is -> self-instruct (by the base model or the Generator,
``self_instruct.model``) -> generate -> extend -> teardown of every server -> select -> SFT data ->
train Generator and Extender. With the sequential layout the servers come one at a time in the
order the steps need them: the base model's (self-instruct), the Generator's, the Extender's. Its
outputs, the two training outputs, are the next iteration's roles; ``run_data`` (the datasets of
the iterations so far, see RunData) goes on to the next iteration and the final phase, so every
step reading earlier iterations' data has it as an input.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

import components
from pipelines.servers import PhaseServers
from pipelines.tasks import Tasks
from selflengthen.config import RunConfig

ROLES = ("generator", "extender")


def build_iteration(config: RunConfig) -> GraphComponent:
    """The iteration sub-pipeline for ``config`` (the same graph for every iteration)."""

    @dsl.pipeline(name="iteration", description="One Self-Lengthen macro-iteration: generate, extend, select, train both roles.")
    def iteration(config_json: str, run_id: str, phase: str, base: str, generator: str, extender: str, run_data: str) -> NamedTuple(
        "Outputs", generator=str, extender=str, run_data=str
    ):
        tasks = Tasks(config, config_json, run_id)
        models = {"generator": generator, "extender": extender}
        servers = PhaseServers(tasks, phase, {"base": base, **models})
        proposer = config.self_instruct.model
        if proposer == "base":  # sequential: the base model's server first, then the Generator's
            queries = servers.generation("base", components.self_instruct, phase=phase)
        servers.generation("generator", components.heldout, phase=phase)
        if config.eval.enabled and config.eval.per_iteration:
            servers.generation("generator", components.evaluate, phase=phase)
        if proposer == "generator":
            queries = servers.generation("generator", components.self_instruct, phase=phase)
        initial = servers.generation("generator", components.generate, phase=phase, kind="initial", queries=queries.outputs["Output"])
        extended = servers.generation("extender", components.extend, phase=phase, responses=initial.outputs["Output"])
        servers.stop_all()

        selected = tasks.step(components.select, phase=phase, responses=extended.outputs["Output"]).after(*servers.stopped)
        data = tasks.step(
            components.sft_data,
            phase=phase,
            selected=selected.outputs["Output"],
            initial=initial.outputs["Output"],
            extended=extended.outputs["Output"],
            run_data=run_data,
        )
        trained = {role: tasks.train(phase, role, data.outputs[role], models[role]).outputs["Output"] for role in ROLES}
        return NamedTuple("Outputs", generator=str, extender=str, run_data=str)(**trained, run_data=data.outputs["run_data"])

    return iteration
