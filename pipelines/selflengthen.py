"""The whole run: the iterations unrolled at compile time, then the final phase, the report and
(``export.enabled``) the export of the dataset and the final model.

Everything runs inside an exit handler whose task stops every model server of the run, so no
server outlives a failed step. Pipeline parameters: ``config_json`` (the run config; the compiled
one by default) and ``target`` (``cluster``: vLLM Deployments; ``local``: server processes, what
``selflengthen run`` passes).
"""

import tempfile
from pathlib import Path

from kfp import compiler, dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent

import components
from pipelines.final import build_final
from pipelines.iteration import build_iteration
from pipelines.tasks import Tasks
from selflengthen.config import RunConfig
from selflengthen.orchestration.layout import iteration_phase
from selflengthen.storage import get_storage

PIPELINE_NAME = "selflengthen"


def build_pipeline(config: RunConfig) -> GraphComponent:
    """The pipeline of ``config``: ``config.iterations`` iterations, each feeding the next."""
    iteration = build_iteration(config)
    final = build_final(config)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"Self-Lengthen, {config.iterations} macro-iterations: a Generator writes, an Extender lengthens, both are fine-tuned on the longer text.",
        pipeline_root=config.pipeline.pipeline_root,
    )
    def selflengthen(config_json: str = config.to_json(), target: str = "cluster"):
        tasks = Tasks(config, config_json, target)
        exit_task = tasks.step(components.teardown_run, cache=False, target=target).set_display_name("teardown all servers")
        with dsl.ExitHandler(exit_task, name="run"):
            generator = extender = tasks.step(components.prepare, cache=False, iterations=config.iterations).output
            for index in range(1, config.iterations + 1):
                step = iteration(config_json=config_json, target=target, phase=iteration_phase(index), generator=generator, extender=extender)
                step.set_display_name(f"iteration {index}")
                generator, extender = step.outputs["generator"], step.outputs["extender"]
            tail = final(config_json=config_json, target=target, generator=generator).set_display_name("final")
            report = tasks.step(components.report, cache=False).after(tail)
            if config.export.enabled:
                exported = tasks.step(components.export, cache=False).after(report)
                if config.export.hub_repo and config.serving.cluster.hf_token_secret:
                    # the push's token: key HF_TOKEN of the Secret the vLLM servers use, as export.token_env
                    secret = {"HF_TOKEN": config.export.token_env}
                    kubernetes.use_secret_as_env(exported, secret_name=config.serving.cluster.hf_token_secret, secret_key_to_env=secret)

    return selflengthen


def compile_pipeline(config: RunConfig, output: str | Path) -> Path:
    """Compile the pipeline of ``config`` to a KFP v2 YAML file at ``output``.

    The file is compiled in a temporary folder and then written atomically, so an output that cannot be
    written fails with its path (StorageError) and never leaves a partial file.
    """
    output = Path(output)
    with tempfile.TemporaryDirectory() as folder:
        compiled = Path(folder) / output.name
        compiler.Compiler().compile(build_pipeline(config), str(compiled))
        get_storage().put_file(compiled, str(output))
    return output
