"""The whole run: the iterations unrolled at compile time, then the final phase, the report and
(``export.enabled``) the export of the dataset and the final model.

Everything runs inside an exit handler whose task deletes every model server and TrainJob of the
run, so none outlives a failed step. Pipeline parameters: ``config_json`` (the run config; the
compiled one by default; ``execution.target`` was decided when the pipeline was built) and
``run_id`` (empty: the KFP run's own id, so every run, recurring ones too, writes its own prefix
and creates its own objects; a run id given again resumes that run, its finished steps cached).

The run id reaches every step as a task input from the first step, identify-run, which is never
cached and resolves ``{{$.pipeline_job_uuid}}``: the KFP backend fills a placeholder only when it
is a task input's whole value (kubeflow/pipelines 2.17.0, backend/src/v2/driver/resolve.go), and
leaves it in a pipeline parameter's default as it is (backend/src/v2/compiler/argocompiler/argo.go).
"""

import tempfile
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl.graph_component import GraphComponent

import components
from pipelines.final import build_final
from pipelines.iteration import build_iteration
from pipelines.tasks import Tasks, configure, knows_its_pod, use_hub_token
from selflengthen.config import RunConfig
from selflengthen.modelio import HUB_SCHEME
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
    def selflengthen(config_json: str = config.to_json(), run_id: str = ""):
        exit_task = knows_its_pod(
            configure(
                components.teardown_run(config_json=config_json, explicit_run_id=run_id, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
                config,
                cache=False,
            )
        ).set_display_name("teardown all servers and TrainJobs")
        with dsl.ExitHandler(exit_task, name="run"):
            identify = components.identify_run(config_json=config_json, explicit_run_id=run_id, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
            run = configure(identify, config, cache=False).output
            tasks = Tasks(config, config_json, run)
            prepare = tasks.step(components.prepare, cache=False, iterations=config.iterations)
            if config.model.base.startswith(HUB_SCHEME):  # prepare copies the Hub model to S3 (a gated one needs the token)
                use_hub_token(prepare, config)
            base = generator = extender = prepare.output
            run_data = ""  # no dataset before the first iteration
            for index in range(1, config.iterations + 1):
                step = iteration(
                    config_json=config_json,
                    run_id=run,
                    phase=iteration_phase(index),
                    base=base,
                    generator=generator,
                    extender=extender,
                    run_data=run_data,
                )
                step.set_display_name(f"iteration {index}")
                generator, extender, run_data = step.outputs["generator"], step.outputs["extender"], step.outputs["run_data"]
            tail = final(config_json=config_json, run_id=run, base=base, generator=generator, run_data=run_data)
            tail.set_display_name("final")
            report = tasks.step(components.report, cache=False).after(tail)
            if config.export.enabled:
                exported = tasks.step(components.export, cache=False).after(report)
                if config.export.hub_repo:  # the push's token, as export.token_env
                    use_hub_token(exported, config, config.export.token_env)

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
