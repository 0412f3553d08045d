"""The base model and the training of a role."""

from kfp import dsl
from kfp.dsl import Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare(config_json: str, run_id: str, iterations: int) -> str:
    """Check the config against the compiled graph (``iterations``) and the base model (building the
    tiny one when the config asks); outputs the base model's URI."""
    from selflengthen.orchestration import steps

    return steps.prepare(config_json, run_id=run_id, iterations=iterations)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(config_json: str, run_id: str, phase: str, role: str, data: str, previous: str, metrics: Output[Metrics]) -> str:
    """Fine-tune ``role`` on ``data``, continuing from ``previous``; outputs the training output URI."""
    from selflengthen.orchestration import steps

    return steps.train(config_json, run_id=run_id, phase=phase, role=role, data=data, previous=previous, metrics=metrics)
