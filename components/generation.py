"""Steps that generate through a served model: self-instruct, answers, extension, length control."""

from kfp import dsl
from kfp.dsl import Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def self_instruct(config_json: str, run_id: str, phase: str, endpoint: str, metrics: Output[Metrics]) -> str:
    """New long-writing queries by few-shot self-instruct, judged and deduplicated."""
    from selflengthen.orchestration import steps

    return steps.self_instruct(config_json, run_id=run_id, phase=phase, endpoint=endpoint, metrics=metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def generate(config_json: str, run_id: str, phase: str, kind: str, queries: str, endpoint: str, metrics: Output[Metrics]) -> str:
    """Answers of the Generator to ``queries`` (``kind``: initial or collected)."""
    from selflengthen.orchestration import steps

    return steps.generate(config_json, run_id=run_id, phase=phase, kind=kind, queries=queries, endpoint=endpoint, metrics=metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def heldout(config_json: str, run_id: str, phase: str, endpoint: str, metrics: Output[Metrics]) -> str:
    """Answers of the Generator served in ``phase`` to the run's fixed held-out queries."""
    from selflengthen.orchestration import steps

    return steps.heldout(config_json, run_id=run_id, phase=phase, endpoint=endpoint, metrics=metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def extend(config_json: str, run_id: str, phase: str, responses: str, endpoint: str, metrics: Output[Metrics]) -> str:
    """Two-stage, multi-round extension of the initial responses by the Extender."""
    from selflengthen.orchestration import steps

    return steps.extend(config_json, run_id=run_id, phase=phase, responses=responses, endpoint=endpoint, metrics=metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def length_control(config_json: str, run_id: str, run_data: str, collected: str, endpoint: str, metrics: Output[Metrics]) -> str:
    """Length-constrained queries over every iteration's responses (``run_data``) and the final collection."""
    from selflengthen.orchestration import steps

    return steps.length_control(config_json, run_id=run_id, run_data=run_data, collected=collected, endpoint=endpoint, metrics=metrics)
