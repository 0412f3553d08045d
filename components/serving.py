"""Serve and teardown of a role's model server, and the teardown of every server of the run."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def serve(config_json: str, target: str, phase: str, role: str, model: str) -> str:
    """Start the model server of ``role`` for ``phase`` on ``model``; outputs its record's URI."""
    from selflengthen.orchestration import steps

    return steps.serve(config_json, target=target, phase=phase, role=role, model=model)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def teardown(config_json: str, target: str, phase: str, role: str):
    """Stop the model server of ``role`` for ``phase``."""
    from selflengthen.orchestration import steps

    steps.teardown(config_json, target=target, phase=phase, role=role)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def teardown_run(config_json: str, target: str, status: dsl.PipelineTaskFinalStatus):
    """Exit handler: stop every model server of the run, whatever the run's outcome."""
    from selflengthen.orchestration import steps

    print(f"run finished with state {status.state}")
    steps.teardown_run(config_json, target=target)
