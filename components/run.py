"""The run's own steps: its identity first, its clean-up last (the exit handler)."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def identify_run(config_json: str, explicit_run_id: str, kfp_run_id: str) -> str:
    """The run's id: ``explicit_run_id`` when set (the same id again resumes that run), else the
    KFP run's own id (``kfp_run_id``, the placeholder the backend fills)."""
    from selflengthen.orchestration import steps

    return steps.identify_run(config_json, explicit_run_id=explicit_run_id, kfp_run_id=kfp_run_id)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def teardown_run(config_json: str, explicit_run_id: str, kfp_run_id: str, status: dsl.PipelineTaskFinalStatus):
    """Exit handler: delete every model server and TrainJob of the run (cluster objects first, by
    label), then the run's server records, whatever the run's outcome. An exit task may not read
    another task's output (kfp dsl/tasks_group.py), so it derives the run id as identify-run does."""
    from selflengthen.orchestration import steps

    print(f"run finished with state {status.state}")
    steps.teardown_run(config_json, explicit_run_id=explicit_run_id, kfp_run_id=kfp_run_id)
