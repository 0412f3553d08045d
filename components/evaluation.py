"""Evaluation of a served Generator, the run's report and its export."""

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(config_json: str, run_id: str, phase: str, endpoint: str, metrics: Output[Metrics]) -> str:
    """Benchmarks answered by the Generator served in ``phase``, scored for length following."""
    from selflengthen.orchestration import steps

    return steps.evaluate(config_json, run_id=run_id, phase=phase, endpoint=endpoint, metrics=metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(config_json: str, run_id: str, metrics: Output[Metrics], markdown: Output[Markdown]) -> str:
    """The run report (JSON, Markdown, HTML with length plots); figures as Metrics, Markdown in the UI."""
    from selflengthen.orchestration import steps

    return steps.report(config_json, run_id=run_id, metrics=metrics, markdown=markdown)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(config_json: str, run_id: str) -> str:
    """The run's dataset and final model, with cards, to export.output (and the Hub with export.hub_repo)."""
    from selflengthen.orchestration import steps

    return steps.export(config_json, run_id=run_id)
