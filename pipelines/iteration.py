"""One macro-iteration as a sub-pipeline.

serve Generator and Extender -> held-out answers (and an evaluation) of the Generator as it is ->
self-instruct -> generate -> extend -> teardown of both servers -> select -> SFT data -> train
Generator and Extender. Its outputs, the two training outputs, are the next iteration's roles;
``run_data`` (the datasets of the iterations so far, see RunData) goes on to the next iteration
and the final phase, so every step reading earlier iterations' data has it as an input.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

import components
from pipelines.tasks import Tasks
from selflengthen.config import RunConfig

ROLES = ("generator", "extender")


def build_iteration(config: RunConfig) -> GraphComponent:
    """The iteration sub-pipeline for ``config`` (the same graph for every iteration)."""

    @dsl.pipeline(name="iteration", description="One Self-Lengthen macro-iteration: generate, extend, select, train both roles.")
    def iteration(config_json: str, run_id: str, phase: str, generator: str, extender: str, run_data: str) -> NamedTuple(
        "Outputs", generator=str, extender=str, run_data=str
    ):
        tasks = Tasks(config, config_json, run_id)
        models = {"generator": generator, "extender": extender}
        endpoint = {role: tasks.serve(phase, role, models[role]).outputs["record"] for role in ROLES}
        users = {role: [] for role in ROLES}
        users["generator"].append(tasks.generation(components.heldout, phase=phase, endpoint=endpoint["generator"]))
        if config.eval.enabled and config.eval.per_iteration:
            users["generator"].append(tasks.generation(components.evaluate, phase=phase, endpoint=endpoint["generator"]))
        queries = tasks.generation(components.self_instruct, phase=phase, endpoint=endpoint["generator"])
        initial = tasks.generation(
            components.generate, phase=phase, kind="initial", queries=queries.outputs["Output"], endpoint=endpoint["generator"]
        )
        extended = tasks.generation(components.extend, phase=phase, responses=initial.outputs["Output"], endpoint=endpoint["extender"])
        users["generator"] += [queries, initial]
        users["extender"].append(extended)
        stopped = [tasks.teardown(phase, role, users[role]) for role in ROLES]

        selected = tasks.step(components.select, phase=phase, responses=extended.outputs["Output"]).after(*stopped)
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
