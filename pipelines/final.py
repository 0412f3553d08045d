"""The phase after the iterations, as a sub-pipeline.

serve the final Generator -> its held-out answers (and an evaluation) -> new queries it answers
alone (the collection) -> length-constrained queries over every response -> teardown -> final SFT
of the Generator -> serve the result -> its held-out answers (and the evaluation) -> teardown.
Outputs the final model.
"""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

import components
from pipelines.tasks import Tasks
from selflengthen.config import RunConfig
from selflengthen.orchestration.layout import EVALUATION_PHASE, FINAL_PHASE


def build_final(config: RunConfig) -> GraphComponent:
    """The final-phase sub-pipeline for ``config``."""

    @dsl.pipeline(name="final", description="Length-following data from the final Generator, its final SFT and evaluation.")
    def final(config_json: str, run_id: str, generator: str, run_data: str) -> str:
        tasks = Tasks(config, config_json, run_id)
        endpoint = tasks.serve(FINAL_PHASE, "generator", generator).outputs["record"]
        users = [tasks.generation(components.heldout, phase=FINAL_PHASE, endpoint=endpoint)]
        if config.eval.enabled and config.eval.per_iteration:
            users.append(tasks.generation(components.evaluate, phase=FINAL_PHASE, endpoint=endpoint))
        collected = ""
        if config.length_control.extra_queries:
            queries = tasks.generation(components.self_instruct, phase=FINAL_PHASE, endpoint=endpoint)
            collection = tasks.generation(
                components.generate, phase=FINAL_PHASE, kind="collected", queries=queries.outputs["Output"], endpoint=endpoint
            )
            users += [queries, collection]
            collected = collection.outputs["Output"]
        data = tasks.generation(components.length_control, run_data=run_data, collected=collected, endpoint=endpoint)
        stopped = tasks.teardown(FINAL_PHASE, "generator", [*users, data])

        model = tasks.train(FINAL_PHASE, "generator", data.outputs["Output"], generator).after(stopped).outputs["Output"]
        final_endpoint = tasks.serve(EVALUATION_PHASE, "generator", model).set_display_name("serve final generator").outputs["record"]
        final_users = [tasks.generation(components.heldout, phase=EVALUATION_PHASE, endpoint=final_endpoint)]
        if config.eval.enabled:
            final_users.append(tasks.generation(components.evaluate, phase=EVALUATION_PHASE, endpoint=final_endpoint))
        tasks.teardown(EVALUATION_PHASE, "generator", final_users).set_display_name("teardown final generator")
        return model

    return final
