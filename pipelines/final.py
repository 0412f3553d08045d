"""The phase after the iterations, as a sub-pipeline.

Model servers as ``serving.layout`` says -> the final Generator's held-out answers (and an
evaluation) -> new queries (self-instruct by the base model or the Generator) it answers alone
(the collection) -> length-constrained queries over every response -> teardown -> final SFT of the
Generator -> serve the result -> its held-out answers (and the evaluation) -> teardown.
Outputs the final model.
"""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

import components
from pipelines.servers import PhaseServers
from pipelines.tasks import Tasks
from selflengthen.config import RunConfig
from selflengthen.orchestration.layout import EVALUATION_PHASE, FINAL_PHASE


def build_final(config: RunConfig) -> GraphComponent:
    """The final-phase sub-pipeline for ``config``."""

    @dsl.pipeline(name="final", description="Length-following data from the final Generator, its final SFT and evaluation.")
    def final(config_json: str, run_id: str, base: str, generator: str, run_data: str) -> str:
        tasks = Tasks(config, config_json, run_id)
        servers = PhaseServers(tasks, FINAL_PHASE, {"base": base, "generator": generator})
        proposer = config.self_instruct.model
        collect = bool(config.length_control.extra_queries)
        if collect and proposer == "base":  # sequential: the base model's server first
            queries = servers.generation("base", components.self_instruct, phase=FINAL_PHASE)
        servers.generation("generator", components.heldout, phase=FINAL_PHASE)
        if config.eval.enabled and config.eval.per_iteration:
            servers.generation("generator", components.evaluate, phase=FINAL_PHASE)
        collected = ""
        if collect:
            if proposer == "generator":
                queries = servers.generation("generator", components.self_instruct, phase=FINAL_PHASE)
            collection = servers.generation(
                "generator", components.generate, phase=FINAL_PHASE, kind="collected", queries=queries.outputs["Output"]
            )
            collected = collection.outputs["Output"]
        data = servers.generation("generator", components.length_control, run_data=run_data, collected=collected)
        servers.stop_all()

        model = tasks.train(FINAL_PHASE, "generator", data.outputs["Output"], generator).after(*servers.stopped).outputs["Output"]
        evaluation = PhaseServers(tasks, EVALUATION_PHASE, {"base": base, "generator": model})
        evaluation.generation("generator", components.heldout, phase=EVALUATION_PHASE)
        if config.eval.enabled:
            evaluation.generation("generator", components.evaluate, phase=EVALUATION_PHASE)
        for task in evaluation.serving.values():
            task.set_display_name("serve final model")
        for task in evaluation.stop_all():
            task.set_display_name("teardown final model")
        return model

    return final
