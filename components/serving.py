"""Serve and teardown of a role's model server."""

from typing import NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def serve(config_json: str, run_id: str, phase: str, role: str, model: str) -> NamedTuple("Outputs", record=str, url=str, model=str):
    """Start the model server of ``role`` for ``phase`` on ``model``; outputs its record's URI (what
    the steps using it read), and the server's base URL and model name (shown in the run's graph)."""
    from selflengthen.orchestration import steps

    served = steps.serve(config_json, run_id=run_id, phase=phase, role=role, model=model)
    return NamedTuple("Outputs", record=str, url=str, model=str)(**served)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def teardown(config_json: str, run_id: str, phase: str, role: str):
    """Stop the model server of ``role`` for ``phase``."""
    from selflengthen.orchestration import steps

    steps.teardown(config_json, run_id=run_id, phase=phase, role=role)
