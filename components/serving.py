"""Serve and teardown of a model server (a role's, or the one the roles share)."""

from typing import NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def serve(
    config_json: str, run_id: str, phase: str, server: str, base: str, generator: str, extender: str
) -> NamedTuple("Outputs", record=str, url=str, model=str):
    """Start the model server ``server`` of ``phase`` (``generator``, ``extender``, ``base`` or
    ``shared``) for the roles' models (empty: not served by it); outputs its record's URI (what the
    steps using it read), and the server's base URL and model names (shown in the run's graph)."""
    from selflengthen.orchestration import steps

    served = steps.serve(config_json, run_id=run_id, phase=phase, server=server, base=base, generator=generator, extender=extender)
    return NamedTuple("Outputs", record=str, url=str, model=str)(**served)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def teardown(config_json: str, run_id: str, phase: str, server: str):
    """Stop the model server ``server`` of ``phase``."""
    from selflengthen.orchestration import steps

    steps.teardown(config_json, run_id=run_id, phase=phase, server=server)
